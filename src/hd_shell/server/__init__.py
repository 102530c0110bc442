"""The kit of the server binaries: settings, the HTTP face, the process, frames."""
