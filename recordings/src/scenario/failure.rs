//! The failure predicate: when a run counts as failed, judged on the failure step's exit and
//! output. Its parts (exit, signal, output text, output pattern) combine with `match = "any"`
//! (the default: one part is enough) or `match = "all"`.

use std::fmt;

use crate::decode::signal_name;

/// When a run counts as failed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The step whose ending is judged.
    pub step: String,
    /// How the step's exit status must be, if that is a part.
    pub exit: Option<ExitMatch>,
    /// The step was killed by one of these signals, if that is a part (empty: not a part).
    pub signals: Vec<i32>,
    /// The step's output contains this text, if that is a part.
    pub output: Option<String>,
    /// A line of the step's output matches this pattern, if that is a part.
    pub output_regex: Option<regex::Regex>,
    /// Every part must hold (`match = "all"`); otherwise one is enough.
    pub all: bool,
}

/// The exit statuses that count as a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitMatch {
    /// Any status but a clean 0 (a kill by a signal included).
    Nonzero,
    /// Exactly one of these codes from exit(2) (a kill by a signal is none of them).
    Codes(Vec<i32>),
}

/// How a step ended, as the predicate sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending<'a> {
    /// Its exit code; 128+signal when a signal killed it; -1 when its end is unknown.
    pub code: i32,
    /// The signal that killed it, 0 if none.
    pub signal: i32,
    /// Its output, line by line.
    pub lines: &'a [String],
}

impl Failure {
    /// Whether a step that ended like this failed.
    pub fn holds(&self, end: Ending<'_>) -> bool {
        let mut parts = Vec::with_capacity(4);
        if let Some(exit) = &self.exit {
            parts.push(match exit {
                ExitMatch::Nonzero => end.code != 0,
                ExitMatch::Codes(codes) => end.signal == 0 && codes.contains(&end.code),
            });
        }
        if !self.signals.is_empty() {
            parts.push(end.signal != 0 && self.signals.contains(&end.signal));
        }
        if let Some(text) = &self.output {
            parts.push(end.lines.iter().any(|l| l.contains(text.as_str())));
        }
        if let Some(re) = &self.output_regex {
            parts.push(end.lines.iter().any(|l| re.is_match(l)));
        }
        if self.all {
            !parts.is_empty() && parts.iter().all(|p| *p)
        } else {
            parts.iter().any(|p| *p)
        }
    }
}

/// "`submit` exits non-zero or prints \"lost:\"": the predicate as a user would say it.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match &self.exit {
            Some(ExitMatch::Nonzero) => parts.push("exits non-zero".to_string()),
            Some(ExitMatch::Codes(c)) => {
                let codes: Vec<String> = c.iter().map(i32::to_string).collect();
                parts.push(format!("exits with {}", codes.join(" or ")));
            }
            None => {}
        }
        if !self.signals.is_empty() {
            let names: Vec<String> = self.signals.iter().map(|s| signal_name(*s)).collect();
            parts.push(format!("is killed by {}", names.join(" or ")));
        }
        if let Some(t) = &self.output {
            parts.push(format!("prints {t:?}"));
        }
        if let Some(re) = &self.output_regex {
            parts.push(format!("prints a line matching /{}/", re.as_str()));
        }
        let joiner = if self.all { " and " } else { " or " };
        write!(f, "`{}` {}", self.step, parts.join(joiner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(
        exit: Option<ExitMatch>,
        signals: Vec<i32>,
        output: Option<&str>,
        re: Option<&str>,
        all: bool,
    ) -> Failure {
        Failure {
            step: "s".into(),
            exit,
            signals,
            output: output.map(str::to_string),
            output_regex: re.map(|r| regex::Regex::new(r).unwrap()),
            all,
        }
    }

    #[test]
    fn each_part_and_their_combination() {
        let lost = vec!["8 job files".to_string(), "lost: job-03 job-05".to_string()];
        let none: Vec<String> = vec![];
        let end = |code, signal, lines| Ending { code, signal, lines };
        // (predicate, ending, failed?)
        let table: Vec<(Failure, Ending<'_>, bool)> = vec![
            (failure(Some(ExitMatch::Nonzero), vec![], None, None, false), end(1, 0, &none), true),
            (failure(Some(ExitMatch::Nonzero), vec![], None, None, false), end(0, 0, &none), false),
            (failure(Some(ExitMatch::Nonzero), vec![], None, None, false), end(137, 9, &none), true),
            (failure(Some(ExitMatch::Codes(vec![3])), vec![], None, None, false), end(3, 0, &none), true),
            (failure(Some(ExitMatch::Codes(vec![3])), vec![], None, None, false), end(1, 0, &none), false),
            (failure(Some(ExitMatch::Codes(vec![1, 3])), vec![], None, None, false), end(1, 0, &none), true),
            // 128+3 is a kill by SIGQUIT, not exit(131) and never exit(3).
            (failure(Some(ExitMatch::Codes(vec![131])), vec![], None, None, false), end(131, 3, &none), false),
            (failure(None, vec![11, 6], None, None, false), end(139, 11, &none), true),
            (failure(None, vec![11], None, None, false), end(134, 6, &none), false),
            (failure(None, vec![11], None, None, false), end(11, 0, &none), false),
            (failure(None, vec![], Some("lost:"), None, false), end(1, 0, &lost), true),
            (failure(None, vec![], None, Some(r"^lost: (job-\d+ ?)+$"), false), end(1, 0, &lost), true),
            (failure(None, vec![], None, Some(r"^lost: $"), false), end(1, 0, &lost), false),
            // any: one part is enough; all: every part.
            (failure(Some(ExitMatch::Codes(vec![2])), vec![], Some("lost:"), None, false), end(1, 0, &lost), true),
            (failure(Some(ExitMatch::Codes(vec![2])), vec![], Some("lost:"), None, true), end(1, 0, &lost), false),
            (failure(Some(ExitMatch::Codes(vec![1])), vec![], Some("lost:"), None, true), end(1, 0, &lost), true),
            (failure(Some(ExitMatch::Nonzero), vec![], Some("lost:"), None, true), end(1, 0, &none), false),
        ];
        for (i, (f, e, want)) in table.iter().enumerate() {
            assert_eq!(f.holds(*e), *want, "row {i}: {f} on {e:?}");
        }
    }

    #[test]
    fn says_itself() {
        let f = failure(Some(ExitMatch::Codes(vec![1, 3])), vec![11], Some("lost:"), Some("^E"), true);
        assert_eq!(
            f.to_string(),
            "`s` exits with 1 or 3 and is killed by SIGSEGV and prints \"lost:\" and prints a line matching /^E/"
        );
        let f = failure(Some(ExitMatch::Nonzero), vec![], None, None, false);
        assert_eq!(f.to_string(), "`s` exits non-zero");
    }
}
