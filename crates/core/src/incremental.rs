//! `NewClusterWithIncrementalUpgrade`: the arithmetic of moving traffic and Serve capacity
//! step by step from the active cluster to the pending one (and back on a rollback), as
//! KubeRay v1.7 does it (`docs/contract.md`, "Incremental upgrade").
//!
//! State lives in the RayService status, in KubeRay's fields: `targetCapacity`,
//! `trafficRoutedPercent` and `lastTrafficMigratedTime` of the active and pending cluster.
//! Forward, the two alternate:
//! 1. capacity: when the pending cluster's traffic has reached its capacity, the pending
//!    cluster's capacity rises by `maxSurgePercent` if the two capacities sum to 100 or less,
//!    else the active cluster's capacity falls by `maxSurgePercent`;
//! 2. traffic: every `intervalSeconds`, while the pending cluster is ready and its traffic is
//!    below its capacity, `stepSizePercent` more traffic moves to it (never above its capacity).
//!
//! The upgrade is complete when the active capacity is 0 and the pending traffic 100. A
//! rollback runs the same steps the other way (the active cluster regains traffic up to its
//! capacity, its capacity rises back to 100 and the pending cluster's falls to 0).

use k8s_openapi::jiff::Timestamp;
use rayservice_api::{RayServiceSpec, RayServiceStatus, UpgradeType};

use crate::model::WeightedCluster;

/// The step parameters of `upgradeStrategy.clusterUpgradeOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `maxSurgePercent` (default 100): how much capacity changes at once.
    pub max_surge: i32,
    /// `stepSizePercent`: how much traffic moves at once.
    pub step: i32,
    /// `intervalSeconds`: the least time between two traffic moves.
    pub interval_seconds: i64,
}

impl Options {
    /// The options of a spec whose upgrade strategy is incremental; `None` for other strategies.
    pub fn of(spec: &RayServiceSpec) -> Option<Options> {
        let strategy = spec.upgrade_strategy.as_ref()?;
        if strategy.type_ != Some(UpgradeType::NewClusterWithIncrementalUpgrade) {
            return None;
        }
        let options = strategy.cluster_upgrade_options.as_ref();
        Some(Options {
            max_surge: options
                .and_then(|o| o.max_surge_percent)
                .unwrap_or(100)
                .clamp(0, 100),
            step: options
                .and_then(|o| o.step_size_percent)
                .unwrap_or(100)
                .clamp(0, 100),
            interval_seconds: options
                .and_then(|o| o.interval_seconds)
                .map_or(1, i64::from)
                .max(1),
        })
    }
}

/// Where an incremental upgrade stands: capacities and traffic shares of both clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Serve `target_capacity` of the active cluster.
    pub active_capacity: i32,
    /// Serve `target_capacity` of the pending cluster.
    pub pending_capacity: i32,
    /// Percent of requests sent to the active cluster.
    pub active_traffic: i32,
    /// Percent of requests sent to the pending cluster.
    pub pending_traffic: i32,
    /// When the active cluster's share last changed.
    pub active_migrated: Option<Timestamp>,
    /// When the pending cluster's share last changed.
    pub pending_migrated: Option<Timestamp>,
}

impl Split {
    /// The state written in a status; KubeRay's defaults where a field is not set yet
    /// (active 100 % capacity and traffic, pending 0 %).
    pub fn from_status(status: &RayServiceStatus) -> Split {
        let (active, pending) = (
            &status.active_service_status,
            &status.pending_service_status,
        );
        let time = |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
        Split {
            active_capacity: active.target_capacity.unwrap_or(100),
            pending_capacity: pending.target_capacity.unwrap_or(0),
            active_traffic: active.traffic_routed_percent.unwrap_or(100),
            pending_traffic: pending.traffic_routed_percent.unwrap_or(0),
            active_migrated: time(&active.last_traffic_migrated_time),
            pending_migrated: time(&pending.last_traffic_migrated_time),
        }
    }

    /// Writes the state into a status whose active and pending clusters are set.
    pub fn write(&self, status: &mut RayServiceStatus) {
        let time = |t: Option<Timestamp>| t.map(crate::status::timestamp);
        let active = &mut status.active_service_status;
        active.target_capacity = Some(self.active_capacity);
        active.traffic_routed_percent = Some(self.active_traffic);
        active.last_traffic_migrated_time = time(self.active_migrated);
        let pending = &mut status.pending_service_status;
        pending.target_capacity = Some(self.pending_capacity);
        pending.traffic_routed_percent = Some(self.pending_traffic);
        pending.last_traffic_migrated_time = time(self.pending_migrated);
    }

    /// A rollback is over: the active cluster is back at full capacity and traffic, and the
    /// pending cluster has none left (or cannot be asked to give it back).
    pub fn rolled_back(&self, pending_healthy: bool) -> bool {
        self.active_capacity == 100
            && self.active_traffic == 100
            && (!pending_healthy || (self.pending_capacity == 0 && self.pending_traffic == 0))
    }

    /// The upgrade is over: the active cluster has no capacity left and the pending cluster
    /// takes all the traffic.
    pub fn upgraded(&self) -> bool {
        self.active_capacity == 0 && self.pending_traffic == 100
    }

    /// When the next traffic move may happen, for the cluster gaining traffic.
    pub fn next_move_at(&self, options: &Options, rolling_back: bool) -> Option<Timestamp> {
        let last = if rolling_back {
            self.active_migrated
        } else {
            self.pending_migrated
        }?;
        Timestamp::from_second(last.as_second() + options.interval_seconds).ok()
    }
}

/// A change of one cluster's Serve capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// The active cluster's new capacity.
    Active(i32),
    /// The pending cluster's new capacity.
    Pending(i32),
}

/// The capacity change due now, if any: only once the cluster gaining traffic holds all the
/// traffic its capacity allows.
pub fn capacity_step(split: &Split, options: &Options, rolling_back: bool) -> Option<Capacity> {
    let surge = options.max_surge;
    let total = split.active_capacity + split.pending_capacity;
    let change = if rolling_back {
        if split.active_traffic != split.active_capacity {
            return None;
        }
        if total > 100 {
            Capacity::Pending((split.pending_capacity - surge).max(0))
        } else {
            Capacity::Active((split.active_capacity + surge).min(100))
        }
    } else {
        if split.pending_traffic != split.pending_capacity {
            return None;
        }
        if total > 100 {
            Capacity::Active((split.active_capacity - surge).max(0))
        } else {
            Capacity::Pending((split.pending_capacity + surge).min(100))
        }
    };
    let unchanged = match change {
        Capacity::Active(c) => c == split.active_capacity,
        Capacity::Pending(c) => c == split.pending_capacity,
    };
    (!unchanged).then_some(change)
}

/// The traffic move due at `now`, if any: `stepSizePercent` toward the cluster gaining
/// traffic, up to its capacity, at least `intervalSeconds` after the previous move. Forward,
/// only while the pending cluster is ready; a rollback moves regardless.
pub fn traffic_step(
    split: &Split,
    options: &Options,
    rolling_back: bool,
    pending_ready: bool,
    now: Timestamp,
) -> Option<Split> {
    if split
        .next_move_at(options, rolling_back)
        .is_some_and(|at| now < at)
    {
        return None;
    }
    let mut next = *split;
    if rolling_back {
        if split.active_traffic >= split.active_capacity {
            return None;
        }
        next.active_traffic = (split.active_traffic + options.step)
            .min(split.active_capacity)
            .min(100);
        next.pending_traffic = 100 - next.active_traffic;
    } else {
        if !pending_ready || split.pending_traffic >= split.pending_capacity {
            return None;
        }
        next.pending_traffic = (split.pending_traffic + options.step)
            .min(split.pending_capacity)
            .min(100);
        next.active_traffic = 100 - next.pending_traffic;
    }
    if next == *split {
        return None;
    }
    if next.active_traffic != split.active_traffic {
        next.active_migrated = Some(now);
    }
    if next.pending_traffic != split.pending_traffic {
        next.pending_migrated = Some(now);
    }
    Some(next)
}

/// The steps an incremental upgrade takes when the new cluster is ready at once, for a person:
/// `new cluster capacity 50%`, `traffic 25% new / 75% old`, ... and the shortest time it
/// takes (traffic moves are `intervalSeconds` apart).
pub fn plan(options: &Options) -> (Vec<String>, i64) {
    let mut split = Split::from_status(&RayServiceStatus::default());
    let mut lines = Vec::new();
    let mut now = Timestamp::UNIX_EPOCH;
    let mut elapsed = 0;
    for _ in 0..1000 {
        if split.upgraded() {
            break;
        }
        if let Some(change) = capacity_step(&split, options, false) {
            match change {
                Capacity::Active(c) => {
                    split.active_capacity = c;
                    lines.push(format!("old cluster target_capacity {c}%"));
                }
                Capacity::Pending(c) => {
                    split.pending_capacity = c;
                    lines.push(format!("new cluster target_capacity {c}%"));
                }
            }
            continue;
        }
        if let Some(at) = split.next_move_at(options, false).filter(|at| *at > now) {
            elapsed += at.as_second() - now.as_second();
            now = at;
        }
        match traffic_step(&split, options, false, true, now) {
            Some(next) => {
                split = next;
                lines.push(format!(
                    "traffic {}% new / {}% old",
                    split.pending_traffic, split.active_traffic
                ));
            }
            None => break,
        }
    }
    (lines, elapsed)
}

/// The clusters that take requests and their shares, as a status holds them: the active
/// cluster and, while one is prepared, the pending cluster (KubeRay's defaults where a share is
/// not set: 100 % and 0 %). Empty while no cluster serves.
pub fn backends(status: &RayServiceStatus) -> Vec<WeightedCluster> {
    let split = Split::from_status(status);
    let Some(active) = &status.active_service_status.ray_cluster_name else {
        return Vec::new();
    };
    let mut backends = vec![WeightedCluster {
        cluster: active.clone(),
        weight: split.active_traffic,
    }];
    if let Some(pending) = &status.pending_service_status.ray_cluster_name {
        backends.push(WeightedCluster {
            cluster: pending.clone(),
            weight: split.pending_traffic,
        });
    }
    backends
}

/// Workers a group runs at `capacity` percent of its `replicas`: whole nodes, rounded up, so
/// that Serve's replicas at that capacity fit.
pub fn workers_at_capacity(replicas: i32, capacity: Option<i32>) -> i32 {
    match capacity {
        None => replicas,
        Some(capacity) => {
            let capacity = i64::from(capacity.clamp(0, 100));
            let replicas = i64::from(replicas.max(0));
            i32::try_from((replicas * capacity + 99) / 100).unwrap_or(i32::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("time")
    }

    fn start() -> Split {
        Split::from_status(&RayServiceStatus::default())
    }

    /// Runs the loop to the end with a ready pending cluster, one reconcile per second, and
    /// returns every state seen.
    fn run(options: Options, rolling_back: bool, mut split: Split) -> Vec<Split> {
        let mut seen = vec![split];
        for second in 0..10_000 {
            let done = if rolling_back {
                split.rolled_back(true)
            } else {
                split.upgraded()
            };
            if done {
                return seen;
            }
            if let Some(change) = capacity_step(&split, &options, rolling_back) {
                match change {
                    Capacity::Active(c) => split.active_capacity = c,
                    Capacity::Pending(c) => split.pending_capacity = c,
                }
            } else if let Some(next) =
                traffic_step(&split, &options, rolling_back, true, at(second))
            {
                split = next;
            }
            seen.push(split);
        }
        panic!("no end: {split:?}");
    }

    #[test]
    fn kuberay_parameter_sets_converge_within_the_surge() {
        for (surge, step, interval) in [(100, 1, 100), (50, 25, 5), (25, 5, 10)] {
            let options = Options {
                max_surge: surge,
                step,
                interval_seconds: interval,
            };
            let seen = run(options, false, start());
            let last = seen.last().expect("states");
            assert!(last.upgraded(), "{surge}/{step}/{interval}: {last:?}");
            for s in &seen {
                assert!(
                    s.active_capacity + s.pending_capacity <= 100 + surge,
                    "{s:?}"
                );
                assert_eq!(s.active_traffic + s.pending_traffic, 100, "{s:?}");
                assert!(s.pending_traffic <= s.pending_capacity, "{s:?}");
            }
            // The pending share never decreases, and moves are intervalSeconds apart.
            let moves: Vec<(i32, Option<Timestamp>)> = seen
                .iter()
                .map(|s| (s.pending_traffic, s.pending_migrated))
                .collect();
            assert!(moves.windows(2).all(|w| w[0].0 <= w[1].0));
            let times: Vec<Timestamp> = seen.iter().filter_map(|s| s.pending_migrated).collect();
            let mut distinct = times.clone();
            distinct.dedup();
            assert!(
                distinct
                    .windows(2)
                    .all(|w| w[1].as_second() - w[0].as_second() >= interval)
            );
        }
    }

    #[test]
    fn a_rollback_returns_everything_to_the_active_cluster() {
        let options = Options {
            max_surge: 50,
            step: 25,
            interval_seconds: 5,
        };
        let mid = Split {
            active_capacity: 50,
            pending_capacity: 100,
            active_traffic: 50,
            pending_traffic: 50,
            active_migrated: Some(at(0)),
            pending_migrated: Some(at(0)),
        };
        let seen = run(options, true, mid);
        let last = seen.last().expect("states");
        assert_eq!(
            (
                last.active_capacity,
                last.active_traffic,
                last.pending_traffic
            ),
            (100, 100, 0)
        );
        assert!(
            seen.windows(2)
                .all(|w| w[0].active_traffic <= w[1].active_traffic)
        );
    }

    #[test]
    fn traffic_waits_for_a_ready_pending_cluster_and_for_the_interval() {
        let options = Options {
            max_surge: 50,
            step: 25,
            interval_seconds: 5,
        };
        let mut split = start();
        split.pending_capacity = 50;
        assert_eq!(traffic_step(&split, &options, false, false, at(0)), None);
        let moved = traffic_step(&split, &options, false, true, at(0)).expect("moves");
        assert_eq!((moved.active_traffic, moved.pending_traffic), (75, 25));
        assert_eq!(traffic_step(&moved, &options, false, true, at(4)), None);
        let again = traffic_step(&moved, &options, false, true, at(5)).expect("moves");
        assert_eq!(again.pending_traffic, 50);
        assert_eq!(traffic_step(&again, &options, false, true, at(20)), None);
    }

    #[test]
    fn the_plan_reads_as_steps() {
        let (lines, seconds) = plan(&Options {
            max_surge: 50,
            step: 25,
            interval_seconds: 5,
        });
        assert_eq!(
            lines,
            [
                "new cluster target_capacity 50%",
                "traffic 25% new / 75% old",
                "traffic 50% new / 50% old",
                "old cluster target_capacity 50%",
                "new cluster target_capacity 100%",
                "traffic 75% new / 25% old",
                "traffic 100% new / 0% old",
                "old cluster target_capacity 0%",
            ]
        );
        assert_eq!(seconds, 15);
    }

    #[test]
    fn workers_follow_capacity_rounded_up() {
        assert_eq!(workers_at_capacity(2, None), 2);
        assert_eq!(workers_at_capacity(2, Some(50)), 1);
        assert_eq!(workers_at_capacity(3, Some(50)), 2);
        assert_eq!(workers_at_capacity(2, Some(0)), 0);
        assert_eq!(workers_at_capacity(4, Some(100)), 4);
    }
}
