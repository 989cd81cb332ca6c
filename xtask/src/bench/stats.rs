//! The bench's one definition of each statistic, and its one reader of process memory.
//!
//! - A percentile is the nearest rank: the smallest value such that at least `p` % of the
//!   values are ≤ it, i.e. the value of rank ⌈p · n / 100⌉ (1-based) in sorted order. No
//!   interpolation: every figure in BENCHMARKS.md is a latency that was really seen.
//! - A median is the middle value, or the mean of the two middle ones.
//! - Values that are not numbers (NaN) are left out of both.

use std::cmp::Ordering;

/// The nearest-rank `p`-th percentile of `values` (`p` clamped to the smallest rank);
/// `None` when there is no value.
pub fn percentile<T: Copy + PartialOrd>(values: &[T], p: f64) -> Option<T> {
    // A value that is not equal to itself is a NaN: it has no place in the order.
    #[allow(clippy::eq_op)]
    let mut sorted: Vec<T> = values.iter().copied().filter(|v| v == v).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// [`percentile`] of numbers, NaN when there is none (a table then shows `NaN`, never a
/// made-up zero).
pub fn percentile_or_nan(values: &[f64], p: f64) -> f64 {
    percentile(values, p).unwrap_or(f64::NAN)
}

/// The median of `values`, NaN when there is none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`, `VmHWM:`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory (`VmRSS`) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1), "clamped to the smallest rank");
        let v: Vec<u32> = (1..=400).collect();
        assert_eq!(percentile(&v, 99.0), Some(396));
        assert_eq!(percentile(&v, 50.0), Some(200));
        assert_eq!(percentile(&[7u32], 99.0), Some(7));
        assert_eq!(percentile(&[3u32, 1, 2, 5, 4], 50.0), Some(3));
        assert_eq!(percentile(&[3u32, 1, 2, 5, 4], 99.0), Some(5));
        assert_eq!(percentile(&[1u32, 2], 50.0), Some(1));
        let ms = Duration::from_millis;
        assert_eq!(percentile(&[ms(5), ms(1), ms(3)], 50.0), Some(ms(3)));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
    }

    #[test]
    fn numbers_leave_out_nan() {
        assert_eq!(percentile_or_nan(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile_or_nan(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
        assert_eq!(percentile_or_nan(&[f64::NAN, 2.0, 1.0], 99.0), 2.0);
        assert!(percentile_or_nan(&[], 50.0).is_nan());
        assert!(percentile_or_nan(&[f64::NAN], 50.0).is_nan());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 4.0, 1.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn memory_is_read_for_this_process() {
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(status_kib(std::process::id(), "RssAnon:").is_some());
        assert_eq!(status_kib(std::process::id(), "NoSuchField:"), None);
    }
}
