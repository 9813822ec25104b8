//! The clock model: how a host's raw timestamps map onto the coordinator's timeline.
//!
//! The coordinator probes each agent with four-timestamp exchanges (NTP style). From the
//! low-delay samples it estimates the host's offset; every event then gets an [`Interval`]
//! `[earliest, latest]` on the coordinator's timeline. This module does not order events; that
//! is the merge's job, and it only trusts disjoint intervals.
//!
//! FIXME(issue 3): drift is not fitted yet; the model is a single offset with an error bound.

use serde::{Deserialize, Serialize};

/// One four-timestamp probe: t1/t4 on the coordinator's clock, t2/t3 on the agent's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSample {
    pub t1_ns: i64,
    pub t2_ns: i64,
    pub t3_ns: i64,
    pub t4_ns: i64,
}

impl ProbeSample {
    /// Round-trip delay spent on the network (agent processing time excluded).
    pub fn delay_ns(&self) -> i64 {
        ((self.t4_ns - self.t1_ns) - (self.t3_ns - self.t2_ns)).max(0)
    }

    /// Agent clock minus coordinator clock, assuming a symmetric path.
    pub fn offset_ns(&self) -> i64 {
        ((self.t2_ns - self.t1_ns) + (self.t3_ns - self.t4_ns)) / 2
    }
}

/// A closed interval on the coordinator's timeline, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub earliest_ns: i64,
    pub latest_ns: i64,
}

impl Interval {
    /// True when every point of `self` is strictly before every point of `other`.
    pub fn before(&self, other: &Interval) -> bool {
        self.latest_ns < other.earliest_ns
    }

    /// True when neither interval is before the other: clocks cannot order them.
    pub fn overlaps(&self, other: &Interval) -> bool {
        !self.before(other) && !other.before(self)
    }

    pub fn midpoint_ns(&self) -> i64 {
        self.earliest_ns + (self.latest_ns - self.earliest_ns) / 2
    }
}

/// A host's clock relative to the coordinator: `host = coordinator + offset ± error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockModel {
    pub offset_ns: i64,
    pub error_ns: i64,
}

impl ClockModel {
    /// The model of the coordinator's own clock.
    pub const IDENTITY: ClockModel = ClockModel {
        offset_ns: 0,
        error_ns: 0,
    };

    /// Fits the model from probe samples: the offset of the lowest-delay sample, with an error of
    /// half its delay (the true offset lies within that bound for any path asymmetry).
    /// Returns `None` without samples.
    pub fn fit(samples: &[ProbeSample]) -> Option<ClockModel> {
        let best = samples.iter().min_by_key(|s| s.delay_ns())?;
        Some(ClockModel {
            offset_ns: best.offset_ns(),
            error_ns: best.delay_ns() / 2 + 1,
        })
    }

    /// Where a raw host timestamp lies on the coordinator's timeline.
    pub fn interval(&self, raw_ns: i64) -> Interval {
        let centre = raw_ns - self.offset_ns;
        Interval {
            earliest_ns: centre - self.error_ns,
            latest_ns: centre + self.error_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t1: i64, t2: i64, t3: i64, t4: i64) -> ProbeSample {
        ProbeSample {
            t1_ns: t1,
            t2_ns: t2,
            t3_ns: t3,
            t4_ns: t4,
        }
    }

    #[test]
    fn fit_uses_the_lowest_delay_sample() {
        // Agent is 1000 ns ahead. First sample has an asymmetric 400 ns path, the second 20 ns.
        let samples = [sample(0, 1400, 1410, 420), sample(100, 1110, 1120, 140)];
        let model = ClockModel::fit(&samples).unwrap();
        assert_eq!(samples[1].delay_ns(), 30);
        assert_eq!(model.offset_ns, 1000 - 5);
        assert!((model.offset_ns - 1000).abs() <= model.error_ns);
        assert_eq!(ClockModel::fit(&[]), None);
    }

    #[test]
    fn intervals_order_only_when_disjoint() {
        let model = ClockModel {
            offset_ns: 500,
            error_ns: 10,
        };
        let a = model.interval(1000);
        assert_eq!(
            a,
            Interval {
                earliest_ns: 490,
                latest_ns: 510
            }
        );
        let b = model.interval(1015);
        let c = model.interval(1030);
        assert!(a.overlaps(&b));
        assert!(a.before(&c) && !c.before(&a));
    }
}
