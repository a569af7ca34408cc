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
