//! The clock model: how a host's raw timestamps map onto the coordinator's timeline.
//!
//! The coordinator probes each agent with four-timestamp exchanges (NTP style) in bursts: at the
//! start of a capture, periodically during it, and at the end. From each burst only the
//! lowest-delay sample is kept (an *anchor*: the true offset lies within half its delay). A
//! weighted line through the anchors gives offset and drift. Every event then gets an
//! [`Interval`] `[earliest, latest]` on the coordinator's timeline.
//!
//! The error bound is honest under one assumption, a constant drift during the capture: the
//! difference between the true offset and the fitted line is then itself a line, bounded at every
//! anchor by the anchor's half delay plus the fit's residual there; between anchors the bound is
//! interpolated, beyond the first and last anchor it grows by the worst slope the anchors allow.
//!
//! This module does not order events; that is the merge's job, and it only trusts disjoint
//! intervals and causal edges.

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

    /// Coordinator time the sample describes (the middle of the exchange).
    pub fn at_ns(&self) -> i64 {
        self.t1_ns + (self.t4_ns - self.t1_ns) / 2
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

/// A point where the offset is known within `error_ns` (coordinator time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub at_ns: i64,
    pub error_ns: i64,
}

/// A host's clock relative to the coordinator's:
/// `host(t) = t + offset_ns + drift_ppm·1e-6·(t - ref_ns)` for coordinator time `t`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockModel {
    /// Host minus coordinator at `ref_ns`.
    pub offset_ns: i64,
    /// Smallest error bound of the model (at its best anchor).
    pub error_ns: i64,
    /// Rate of the host clock relative to the coordinator's, parts per million.
    #[serde(default)]
    pub drift_ppm: f64,
    /// Coordinator time the offset refers to.
    #[serde(default)]
    pub ref_ns: i64,
    /// How fast the bound grows beyond the first and last anchor (ppm of the distance).
    #[serde(default)]
    pub drift_error_ppm: f64,
    /// Where the offset is known, in time order; the bound is interpolated between them.
    #[serde(default)]
    pub anchors: Vec<Anchor>,
}

/// Probes closer together than this belong to one burst.
const BURST_GAP_NS: i64 = 20_000_000;
/// Drift bound assumed when a single burst cannot measure it (typical oscillators: ±100 ppm each).
pub const ASSUMED_DRIFT_PPM: f64 = 200.0;

impl ClockModel {
    /// The model of the coordinator's own clock.
    pub fn identity() -> ClockModel {
        ClockModel { offset_ns: 0, error_ns: 0, drift_ppm: 0.0, ref_ns: 0, drift_error_ppm: 0.0, anchors: Vec::new() }
    }

    /// Fits the model from probe samples (any order, any number of bursts). `None` without samples.
    pub fn fit(samples: &[ProbeSample]) -> Option<ClockModel> {
        let mut sorted = samples.to_vec();
        sorted.sort_by_key(|s| s.t1_ns);
        // The best sample of each burst.
        let mut best: Vec<ProbeSample> = Vec::new();
        let mut last_t4 = i64::MIN;
        for s in sorted {
            match best.last_mut() {
                Some(b) if s.t1_ns.saturating_sub(last_t4) < BURST_GAP_NS => {
                    if s.delay_ns() < b.delay_ns() {
                        *b = s;
                    }
                }
                _ => best.push(s),
            }
            last_t4 = s.t4_ns;
        }
        let first = *best.first()?;
        let half_delay = |s: &ProbeSample| s.delay_ns() / 2 + 1;
        if best.len() == 1 {
            let e = half_delay(&first);
            return Some(ClockModel {
                offset_ns: first.offset_ns(),
                error_ns: e,
                drift_ppm: 0.0,
                ref_ns: first.at_ns(),
                drift_error_ppm: ASSUMED_DRIFT_PPM,
                anchors: vec![Anchor { at_ns: first.at_ns(), error_ns: e }],
            });
        }
        // Weighted least squares of offset against time, weights 1/e².
        let ref_ns = first.at_ns();
        let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for s in &best {
            let w = 1.0 / (half_delay(s) as f64).powi(2);
            let x = (s.at_ns() - ref_ns) as f64;
            let y = (s.offset_ns() - first.offset_ns()) as f64;
            sw += w;
            sx += w * x;
            sy += w * y;
            sxx += w * x * x;
            sxy += w * x * y;
        }
        let det = sw * sxx - sx * sx;
        let slope = if det.abs() > f64::EPSILON { (sw * sxy - sx * sy) / det } else { 0.0 };
        let intercept = (sy - slope * sx) / sw;
        let line = |at: i64| first.offset_ns() as f64 + intercept + slope * (at - ref_ns) as f64;
        let anchors: Vec<Anchor> = best
            .iter()
            .map(|s| {
                let residual = (s.offset_ns() as f64 - line(s.at_ns())).abs().ceil() as i64;
                Anchor { at_ns: s.at_ns(), error_ns: half_delay(s) + residual }
            })
            .collect();
        let (a, z) = (anchors[0], anchors[anchors.len() - 1]);
        let span = (z.at_ns - a.at_ns).max(1) as f64;
        Some(ClockModel {
            offset_ns: line(ref_ns).round() as i64,
            error_ns: anchors.iter().map(|a| a.error_ns).min().unwrap_or(0),
            drift_ppm: slope * 1e6,
            ref_ns,
            drift_error_ppm: (a.error_ns + z.error_ns) as f64 / span * 1e6,
            anchors,
        })
    }

    /// Host minus coordinator at coordinator time `at_ns`.
    pub fn offset_at(&self, at_ns: i64) -> i64 {
        self.offset_ns + (self.drift_ppm * 1e-6 * (at_ns - self.ref_ns) as f64).round() as i64
    }

    /// The error bound at coordinator time `at_ns`.
    pub fn error_at(&self, at_ns: i64) -> i64 {
        let grow = |from: &Anchor| {
            from.error_ns + (self.drift_error_ppm * 1e-6 * (at_ns - from.at_ns).abs() as f64).ceil() as i64
        };
        let (Some(first), Some(last)) = (self.anchors.first(), self.anchors.last()) else {
            return self.error_ns;
        };
        if at_ns <= first.at_ns {
            return grow(first);
        }
        if at_ns >= last.at_ns {
            return grow(last);
        }
        let i = self.anchors.partition_point(|a| a.at_ns <= at_ns);
        let (l, r) = (self.anchors[i - 1], self.anchors[i]);
        let lambda = (at_ns - l.at_ns) as f64 / (r.at_ns - l.at_ns).max(1) as f64;
        ((1.0 - lambda) * l.error_ns as f64 + lambda * r.error_ns as f64).ceil() as i64
    }

    /// The largest error bound anywhere in [from_ns, to_ns] (coordinator time): at an end, or at
    /// an anchor between them (between anchors the bound is interpolated, beyond them it grows).
    pub fn max_error_between(&self, from_ns: i64, to_ns: i64) -> i64 {
        let inside = self.anchors.iter().filter(|a| (from_ns..=to_ns).contains(&a.at_ns)).map(|a| a.error_ns);
        inside.chain([self.error_at(from_ns), self.error_at(to_ns)]).max().unwrap_or(self.error_ns)
    }

    /// The coordinator time of a raw host timestamp (the centre of its interval).
    pub fn centre(&self, raw_ns: i64) -> i64 {
        // host = t + offset_ns + d·(t - ref) with d = drift_ppm·1e-6, solved for t relative to
        // ref (durations, so f64 keeps sub-nanosecond precision).
        let since_ref = (raw_ns - self.offset_ns - self.ref_ns) as f64;
        self.ref_ns + (since_ref / (1.0 + self.drift_ppm * 1e-6)).round() as i64
    }

    /// Where a raw host timestamp lies on the coordinator's timeline.
    pub fn interval(&self, raw_ns: i64) -> Interval {
        let centre = self.centre(raw_ns);
        let error = self.error_at(centre);
        Interval { earliest_ns: centre - error, latest_ns: centre + error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe at coordinator time `at` (µs) against a host `offset` (µs) ahead, with one-way
    /// delays `out`/`back` (µs): the model must hold the true offset within its bound.
    fn probe(at_us: i64, offset_us: i64, out_us: i64, back_us: i64) -> ProbeSample {
        let t1 = at_us * 1_000;
        let t2 = t1 + out_us * 1_000 + offset_us * 1_000;
        let t3 = t2 + 2_000;
        let t4 = t3 - offset_us * 1_000 + back_us * 1_000;
        ProbeSample { t1_ns: t1, t2_ns: t2, t3_ns: t3, t4_ns: t4 }
    }

    /// Host clock `offset_us + ppm·t` ahead; bursts at the given times (µs) with asymmetric paths.
    fn skewed_bursts(offset_us: i64, ppm: f64, bursts: &[i64]) -> Vec<ProbeSample> {
        let mut out = Vec::new();
        for &at in bursts {
            for (i, (o, b)) in [(40, 10), (15, 20), (90, 5)].iter().enumerate() {
                let t = at + i as i64 * 200;
                out.push(probe(t, offset_us + (ppm * t as f64 * 1e-6).round() as i64, *o, *b));
            }
        }
        out
    }

    #[test]
    fn samples() {
        let s = probe(0, 1_000, 100, 20);
        assert_eq!((s.delay_ns(), s.offset_ns()), (120_000, 1_040_000));
    }

    #[test]
    fn fits_hold_the_truth_within_their_bounds() {
        // (offset µs, drift ppm, burst times µs)
        let cases: &[(i64, f64, &[i64])] = &[
            (750_000, 100.0, &[0, 500_000, 1_000_000, 5_000_000]),
            (-300_000, 100.0, &[0, 2_000_000]),
            (-300_000, -80.0, &[0, 1_000_000, 2_000_000, 3_000_000]),
            (5, 0.0, &[0]),
        ];
        for &(offset_us, ppm, bursts) in cases {
            let model = ClockModel::fit(&skewed_bursts(offset_us, ppm, bursts)).unwrap();
            assert_eq!(model.anchors.len(), bursts.len());
            assert!((model.drift_ppm - ppm).abs() < 30.0, "{ppm} vs {model:?}");
            let last = *bursts.last().unwrap();
            for t_us in [0, last / 3, last / 2, last, last + 1_000_000] {
                let truth = (offset_us as f64 + ppm * t_us as f64 * 1e-6) * 1_000.0;
                let at = t_us * 1_000;
                let err = model.error_at(at);
                assert!(
                    (model.offset_at(at) as f64 - truth).abs() <= err as f64,
                    "case ({offset_us} µs, {ppm} ppm) at {t_us} µs: {} vs {truth} ± {err}",
                    model.offset_at(at)
                );
                assert!(err < 1_000_000, "bound under 1 ms: {err}");
            }
        }
        assert_eq!(ClockModel::fit(&[]), None);
    }

    #[test]
    fn bounds_interpolate_between_anchors_and_grow_outside() {
        let model = ClockModel {
            offset_ns: 0,
            error_ns: 10,
            drift_ppm: 0.0,
            ref_ns: 0,
            drift_error_ppm: 1_000.0,
            anchors: vec![Anchor { at_ns: 0, error_ns: 10 }, Anchor { at_ns: 1_000, error_ns: 30 }],
        };
        let got: Vec<i64> = [-1_000_000, 0, 500, 1_000, 1_001_000].iter().map(|t| model.error_at(*t)).collect();
        assert_eq!(got, vec![1_010, 10, 20, 30, 1_030]);
    }

    #[test]
    fn intervals_order_only_when_disjoint() {
        let model = ClockModel { offset_ns: 500, error_ns: 10, ..ClockModel::identity() };
        let a = model.interval(1000);
        assert_eq!(a, Interval { earliest_ns: 490, latest_ns: 510 });
        let b = model.interval(1015);
        let c = model.interval(1030);
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(a.before(&c) && !c.before(&a) && !a.overlaps(&c));
        let drifting = ClockModel { offset_ns: 0, drift_ppm: 1_000.0, ..ClockModel::identity() };
        // 1000 ppm: after one second of coordinator time the host is 1 ms ahead.
        assert_eq!(drifting.interval(1_001_000_000).midpoint_ns(), 1_000_000_000);
    }
}
