//! Which snapshots a prune keeps: the newest few, and the newest of each of the last days and
//! weeks that have snapshots (restic's `--keep-last`, `--keep-daily`, `--keep-weekly`).
//!
//! Days and weeks are UTC calendar days and ISO weeks (Monday to Sunday) of the time each
//! snapshot's catalog entry records, so every device of an account decides alike wherever it
//! is. "Newest" is catalog order, the order the snapshots were committed in.

use std::collections::HashSet;

use crate::catalog::SnapshotEntry;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// 1970-01-01 was a Thursday: three days after a Monday.
const EPOCH_WEEKDAY_FROM_MONDAY: u64 = 3;

/// A retention policy: a snapshot any rule keeps is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    /// The newest this many snapshots.
    pub last: usize,
    /// The newest snapshot of each of the newest this many days that have one.
    pub daily: usize,
    /// The newest snapshot of each of the newest this many weeks that have one.
    pub weekly: usize,
}

impl Keep {
    /// Only the newest `n` snapshots.
    pub fn last(n: usize) -> Self {
        Self {
            last: n,
            ..Self::default()
        }
    }

    /// Whether the policy would keep nothing at all.
    pub fn is_nothing(&self) -> bool {
        self.last == 0 && self.daily == 0 && self.weekly == 0
    }

    /// For each of `live` (in catalog order, oldest first), whether it is kept.
    pub fn select(&self, live: &[SnapshotEntry]) -> Vec<bool> {
        let mut kept = vec![false; live.len()];
        let newest_first = || (0..live.len()).rev();
        for i in newest_first().take(self.last) {
            kept[i] = true;
        }
        let day = |i: usize| live[i].created_unix_ms / DAY_MS;
        let week = |i: usize| (day(i) + EPOCH_WEEKDAY_FROM_MONDAY) / 7;
        // Each period counts once even when clocks disagree (a device a day behind puts an
        // older day between newer ones in catalog order).
        for (count, period) in [
            (self.daily, &day as &dyn Fn(usize) -> u64),
            (self.weekly, &week),
        ] {
            let mut seen = HashSet::new();
            for i in newest_first() {
                if seen.len() == count {
                    break;
                }
                if seen.insert(period(i)) {
                    kept[i] = true;
                }
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeviceId, SnapshotId};

    /// Snapshots at these hours after Monday 2024-01-01 00:00 UTC.
    fn at_hours(hours: &[u64]) -> Vec<SnapshotEntry> {
        const MONDAY_2024_01_01_MS: u64 = 1_704_067_200_000;
        hours
            .iter()
            .enumerate()
            .map(|(i, h)| SnapshotEntry {
                seq: i as u64 + 1,
                id: SnapshotId([i as u8; 32]),
                device: DeviceId([1; 16]),
                created_unix_ms: MONDAY_2024_01_01_MS + h * 3_600_000,
                files: 0,
                bytes: 0,
                sealed_len: None,
            })
            .collect()
    }

    fn kept(keep: Keep, hours: &[u64]) -> Vec<u64> {
        let live = at_hours(hours);
        let flags = keep.select(&live);
        hours
            .iter()
            .zip(flags)
            .filter(|(_, k)| *k)
            .map(|(h, _)| *h)
            .collect()
    }

    #[test]
    fn last_keeps_the_newest() {
        assert_eq!(kept(Keep::last(2), &[1, 2, 3, 4]), [3, 4]);
        assert_eq!(kept(Keep::last(9), &[1, 2]), [1, 2]);
        assert!(kept(Keep::default(), &[1, 2]).is_empty());
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_with_snapshots() {
        // Monday 01:00 and 23:00, Wednesday 10:00, 11:00, Thursday 00:00 (hour 72).
        let hours = [1, 23, 58, 59, 72];
        let daily = |n| Keep {
            daily: n,
            ..Keep::default()
        };
        assert_eq!(kept(daily(1), &hours), [72]);
        // Tuesday has none, so three days reach back to Monday's last.
        assert_eq!(kept(daily(3), &hours), [23, 59, 72]);
        assert_eq!(kept(daily(30), &hours), [23, 59, 72]);
    }

    #[test]
    fn a_day_out_of_order_is_counted_once() {
        // Days 1, 2, 3, then a device a day behind (day 2), then day 3 again.
        let hours = [24 + 1, 48 + 1, 72 + 1, 48 + 5, 72 + 5];
        let daily = Keep {
            daily: 3,
            ..Keep::default()
        };
        assert_eq!(kept(daily, &hours), [25, 53, 77]);
    }

    #[test]
    fn weekly_weeks_start_on_monday() {
        // Week 1: Monday 01:00, Sunday 23:00. Week 2: Monday 00:00 and 02:00.
        let hours = [1, 167, 168, 170];
        let weekly = |n| Keep {
            weekly: n,
            ..Keep::default()
        };
        assert_eq!(kept(weekly(1), &hours), [170]);
        assert_eq!(kept(weekly(2), &hours), [167, 170]);
    }

    #[test]
    fn rules_add_up() {
        // Week 1: Monday 01:00, 23:00. Week 2: Monday 02:00, 03:00, Tuesday 08:00.
        let hours = [1, 23, 170, 171, 200];
        let keep = Keep {
            last: 1,
            daily: 2,
            weekly: 2,
        };
        // last: Tuesday's; daily: Tuesday's and Monday's newest; weekly: week 2's and week 1's.
        assert_eq!(kept(keep, &hours), [23, 171, 200]);
        assert!(!keep.is_nothing() && Keep::default().is_nothing());
    }
}
