//! Fuzz targets of mmaudit's decoders and of the audit itself, in the cargo-fuzz
//! layout (`fuzz_targets/<name>.rs`, corpus in `corpus/<name>/`), and [`driver`], which
//! runs them on a stable toolchain: every corpus file, then N inputs made by mutating
//! the corpus, each under `catch_unwind` and a time limit.
//!
//! A target returns normally for any input; it panics only when a property of the code
//! under test is violated (that is a bug found). See [`targets`].

pub mod driver;
pub mod targets;

/// A fuzz target: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// The targets, by name, as the binaries and the corpus directories are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("stream", targets::stream),
    ("records", targets::records),
    ("authenticated_payload", targets::authenticated_payload),
    ("hello", targets::hello),
    ("hello_body", targets::hello_body),
    ("audit", targets::audit),
    ("challenges", targets::challenges),
    ("challenge_body", targets::challenge_body),
    ("commit_audit", targets::commit_audit),
];

/// The committed corpus directory of a target.
pub fn corpus_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed corpus input (valid captures and the regression inputs of
    /// earlier bugs) runs through its target without a failure.
    #[test]
    fn the_corpus_runs_clean() {
        for (name, target) in TARGETS {
            let files = driver::corpus(&corpus_dir(name)).expect("read the corpus");
            assert!(!files.is_empty(), "no corpus for {name}");
            for (path, data) in files {
                let outcome = driver::run_one(*target, &data, driver::DEFAULT_TIMEOUT);
                assert!(outcome.is_ok(), "{name} {}: {outcome:?}", path.display());
            }
        }
    }

    /// The built-in seeds are what is committed (so that cargo-fuzz starts from them).
    #[test]
    fn the_committed_seeds_are_current() {
        for (name, _) in TARGETS {
            for (file, data) in targets::seeds(name) {
                let path = corpus_dir(name).join(&file);
                let committed = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("{}: {e}; run `{name} --write-seeds`", path.display())
                });
                assert_eq!(committed, data, "{} is stale", path.display());
            }
        }
    }

    /// The regression inputs are what their names say: the audit of each ends with the
    /// failure that replaced the old unbounded work.
    #[test]
    fn the_regression_inputs_hit_their_bounds() {
        use mmaudit_verify::check::audit_reader_with;
        let audit = |file: &str| {
            let data = std::fs::read(corpus_dir("audit").join(file)).unwrap();
            let bytes = targets::audit_stream(&data);
            audit_reader_with(
                file,
                &bytes[..],
                &mmaudit_protocol::fuzzing::key(),
                20,
                &Default::default(),
                None,
                |_| {},
            )
            .unwrap()
            .to_text()
        };
        let huge = audit("regression-huge-m");
        assert!(huge.contains("unreasonable dimensions"), "{huge}");
        let pending = audit("regression-pending-300");
        assert!(pending.contains("FAIL"), "{pending}");
    }

    /// The commit-mode seeds start where they say: the honest stream passes with every
    /// call challenged and its opening verified (and so does the one with placeholder
    /// commitments, once filled in), the failing one fails for each of its reasons, and
    /// the huge call hits the plan bound.
    #[test]
    fn the_commit_seeds_reach_deep_states() {
        let audit = |file: &str| {
            let data = std::fs::read(corpus_dir("commit_audit").join(file)).unwrap();
            targets::commit_audit_report(&data)
        };
        let honest = audit("seed-honest");
        assert!(honest.passed(), "{}", honest.to_text());
        assert_eq!(
            (honest.calls, honest.sampled, honest.verified),
            (3, 3, 3),
            "{}",
            honest.to_text()
        );
        let filled = targets::fill_commitments(
            &std::fs::read(corpus_dir("commit_audit").join("seed-honest-placeholders")).unwrap(),
        );
        let placeholders = targets::commit_audit_report(&filled);
        assert!(placeholders.passed(), "{}", placeholders.to_text());
        assert_eq!(
            filled,
            std::fs::read(corpus_dir("commit_audit").join("seed-honest")).unwrap()
        );
        let failing = audit("seed-failing");
        let text = failing.to_text();
        assert!(!failing.passed(), "{text}");
        assert_eq!(failing.integrity_errors, 0, "{text}");
        assert_eq!(failing.mismatched, 1, "{text}");
        assert!(text.contains("not under its root"), "{text}");
        let huge = audit("seed-huge-m").to_text();
        assert!(huge.contains("unreasonable dimensions"), "{huge}");
    }

    /// The driver catches a failing target and says so.
    #[test]
    fn a_panicking_target_is_reported() {
        fn bad(data: &[u8]) {
            assert!(data.len() < 3, "too long");
        }
        assert!(driver::run_one(bad, b"ab", driver::DEFAULT_TIMEOUT).is_ok());
        let err = driver::run_one(bad, b"abcd", driver::DEFAULT_TIMEOUT).unwrap_err();
        assert!(err.contains("too long"), "{err}");
    }
}
