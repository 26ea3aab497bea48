//! Top-k selection for routers.

/// The `k` largest values as (index, value), largest first; ties go to the lower index. NaN
/// sorts lowest.
pub fn top_k(x: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let key = |i: usize| if x[i].is_nan() { f32::NEG_INFINITY } else { x[i] };
    let k = k.min(x.len());
    let cmp = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.truncate(k);
    idx.into_iter().map(|i| (i, x[i])).collect()
}

/// [`top_k`] into `out` (cleared first) without allocating once `out` has room for `k`: the
/// same order, ties to the lower index, NaN lowest.
pub fn top_k_into(x: &[f32], k: usize, out: &mut Vec<(usize, f32)>) {
    out.clear();
    let k = k.min(x.len());
    if k == 0 {
        return;
    }
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    for (i, &v) in x.iter().enumerate() {
        // Entries ahead of i rank higher: larger key, or equal key and lower index (always,
        // since they were seen first).
        let at = out.partition_point(|&(_, w)| key(w).total_cmp(&key(v)).is_ge());
        if at < k {
            if out.len() == k {
                out.pop();
            }
            out.insert(at, (i, v));
        }
    }
}
