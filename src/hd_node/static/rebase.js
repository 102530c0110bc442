// Rebase of a pane edit on a `rejected` (SPEC 6.1.1): the same algorithm as
// hd_protocol/rebase.py (tests/unit/test_page_rebase.py runs these two functions under
// Node.js against the Python one). Each side's change is one region found by trimming
// the common prefix, then suffix, against the base.
function changeBetween(base, next) {
  const limit = Math.min(base.length, next.length);
  let p = 0;
  while (p < limit && base[p] === next[p]) p++;
  let s = 0;
  while (s < limit - p && base[base.length - 1 - s] === next[next.length - 1 - s]) s++;
  return {start: p, end: base.length - s, text: next.slice(p, next.length - s)};
}
function rebase(base, mine, theirs) {
  if (mine === base) return theirs;
  if (theirs === base || theirs === mine) return mine;
  const my = changeBetween(base, mine), their = changeBetween(base, theirs);
  const d = their.text.length - (their.end - their.start);
  if (my.end <= their.start) return theirs.slice(0, my.start) + my.text + theirs.slice(my.end);
  if (my.start >= their.end) return theirs.slice(0, my.start + d) + my.text + theirs.slice(my.end + d);
  const lo = Math.min(my.start, their.start), hi = Math.max(my.end, their.end);
  const mineUnion = base.slice(lo, my.start) + my.text + base.slice(my.end, hi);
  return theirs.slice(0, lo) + mineUnion + theirs.slice(hi + d);
}

export {changeBetween, rebase};
