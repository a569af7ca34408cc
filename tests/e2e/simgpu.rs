//! The simulated GPU, tested the way a user's program uses it: C programs in
//! `tests/programs` are compiled with the system `cc` against the libraries
//! `scripts/simgpu.sh` builds, run with `LD_LIBRARY_PATH`, and check themselves
//! against f64 references (printing PASS/FAIL per case). These tests assert on
//! their exit status and output, and on how `SIMGPU_FAULT`, `SIMGPU_SPLITK`
//! and `SIMGPU_LATENCY_US` change what they see. The commitment program also
//! runs against the kernels' CUDA source compiled for the host
//! (`tests/programs/host_cuda.cpp`) instead of the simulator.

use std::collections::BTreeSet;

use mmaudit_protocol::commit::{leaf_hash, tree_root, Hash};
use mmaudit_tests::simgpu::{compile, compile_host_cuda, libraries, repo_root, run, Run};

fn assert_all_pass(r: &Run, min_cases: usize) {
    assert_eq!(r.code, Some(0), "{}", r.transcript());
    assert!(r.failures().is_empty(), "{}", r.transcript());
    assert!(
        r.passes() >= min_cases,
        "only {} cases ran\n{}",
        r.passes(),
        r.transcript()
    );
    assert!(r.stdout.contains(", 0 failed"), "{}", r.transcript());
}

fn assert_fails(r: &Run) {
    assert_eq!(r.code, Some(1), "{}", r.transcript());
    assert!(!r.failures().is_empty(), "{}", r.transcript());
}

#[test]
fn script_builds_the_sonamed_libraries_and_prints_their_directory() {
    let libs = libraries();
    for name in [
        "libcudart.so.13",
        "libcuda.so.1",
        "libcublas.so.13",
        "libcublasLt.so.13",
        "libcudart.so",
        "libcuda.so",
        "libcublas.so",
        "libcublasLt.so",
        "libsimgpu.so",
    ] {
        assert!(
            libs.lib_dir.join(name).exists(),
            "{name} missing in {}",
            libs.lib_dir.display()
        );
    }
    assert!(libs.lib_dir.is_absolute());
    assert!(libs.include_dir.join("cublasLt.h").exists());
}

#[test]
fn cublas_gemm_entry_points_match_the_f64_reference() {
    let r = run(&compile("simgpu_gemm"), &[], &[]);
    assert_all_pass(&r, 800);
}

#[test]
fn cublas_gemm_check_catches_a_gpu_that_perturbs_results() {
    // The same program, on a GPU that changes one entry per call by 1%:
    // the comparison against the reference must notice.
    let r = run(
        &compile("simgpu_gemm"),
        &[],
        &[("SIMGPU_FAULT", "perturb:0.01")],
    );
    assert_fails(&r);
    assert!(r.failures().len() > 500, "{}", r.transcript());
}

#[test]
fn cublaslt_matmul_matches_the_f64_reference() {
    let r = run(&compile("simgpu_lt"), &[], &[]);
    assert_all_pass(&r, 250);
}

#[test]
fn cublaslt_check_catches_a_gpu_that_skips_rows() {
    let r = run(&compile("simgpu_lt"), &[], &[("SIMGPU_FAULT", "rows:0.5")]);
    assert_fails(&r);
}

/// Runs the fault program in `mode` under the fault `spec` (None: no fault).
fn faults(mode: &str, param: &str, which: &str, spec: Option<&str>) -> Run {
    let exe = compile("simgpu_faults");
    let env: Vec<(&str, &str)> = spec.map(|s| vec![("SIMGPU_FAULT", s)]).unwrap_or_default();
    run(&exe, &[mode, param, which], &env)
}

/// The fault program on its `normal` table: bf16 GEMMs (cuBLAS, strided
/// batched, cuBLASLt column- and row-major) with N(0,1) data, k = 256 and
/// 4096, whose relative dot-product error it measures and prints.
fn normal_faults(mode: &str, param: &str, which: &str, env: &[(&str, &str)]) -> Run {
    run(
        &compile("simgpu_faults"),
        &[mode, param, which, "normal"],
        env,
    )
}

/// The `relerr call N NAME: X` lines of a normal-table run.
fn relative_errors(r: &Run) -> Vec<&str> {
    r.stdout
        .lines()
        .filter(|l| l.starts_with("relerr"))
        .collect()
}

#[test]
fn honest_gpu_computes_every_call_correctly() {
    assert_all_pass(&faults("none", "0", "all", None), 24);
    let normal = normal_faults("none", "0", "all", &[]);
    assert_all_pass(&normal, 12);
    println!("honest:\n{}", relative_errors(&normal).join("\n"));
}

/// Each mode: present, every call shows exactly the documented change (and
/// the honest check fails); absent, the fault check fails.
fn check_fault_mode(mode: &str, param: &str, spec: &str) {
    assert_all_pass(&faults(mode, param, "all", Some(spec)), 24);
    assert_fails(&faults("none", "0", "all", Some(spec)));
    assert_fails(&faults(mode, param, "all", None));
}

#[test]
fn fault_zero_leaves_zeros() {
    check_fault_mode("zero", "0", "zero");
}

#[test]
fn fault_perturb_changes_one_entry_per_call_by_rel() {
    check_fault_mode("perturb", "0.25", "perturb:0.25");
    check_fault_mode("perturb", "-0.5", "perturb:-0.5");
}

#[test]
fn fault_rows_computes_only_the_first_rows() {
    check_fault_mode("rows", "0.5", "rows:0.5");
}

#[test]
fn fault_weights_perturbs_op_a() {
    check_fault_mode("weights", "0.1", "weights:0.1");
}

#[test]
fn fault_precision_fp8_rounds_inputs_to_e4m3() {
    check_fault_mode("fp8", "0", "precision:fp8");
}

/// A cheaper-arithmetic mode, on both tables: present, every call equals the
/// program's own model of the mode (and on N(0,1) data has a relative error
/// in the mode's range); absent, or present while the program expects an
/// honest GPU, the checks fail. Split-k changes nothing of this.
fn check_cheap_mode(mode: &str, param: &str, spec: &str) {
    check_fault_mode(mode, param, spec);
    let fault = [("SIMGPU_FAULT", spec)];
    let r = normal_faults(mode, param, "all", &fault);
    assert_all_pass(&r, 12);
    assert_eq!(relative_errors(&r).len(), 12, "{}", r.transcript());
    println!("{spec}:\n{}", relative_errors(&r).join("\n"));
    assert_fails(&normal_faults("none", "0", "all", &fault));
    assert_fails(&normal_faults(mode, param, "all", &[]));
    let split = [("SIMGPU_FAULT", spec), ("SIMGPU_SPLITK", "5")];
    assert_all_pass(&normal_faults(mode, param, "all", &split), 12);
    assert_all_pass(
        &run(&compile("simgpu_faults"), &[mode, param, "all"], &split),
        24,
    );
}

#[test]
fn fault_precision_fp8_rowscaled_quantises_rows_and_columns() {
    check_cheap_mode("fp8-rowscaled", "0", "precision:fp8-rowscaled");
    // Not the unscaled fp8 mode, nor int8: the model tells them apart.
    assert_fails(&faults("fp8-rowscaled", "0", "all", Some("precision:fp8")));
    assert_fails(&normal_faults(
        "fp8-rowscaled",
        "0",
        "all",
        &[("SIMGPU_FAULT", "precision:int8-rowscaled")],
    ));
}

#[test]
fn fault_precision_int8_rowscaled_quantises_rows_and_columns() {
    check_cheap_mode("int8-rowscaled", "0", "precision:int8-rowscaled");
    assert_fails(&normal_faults(
        "int8-rowscaled",
        "0",
        "all",
        &[("SIMGPU_FAULT", "precision:fp8-rowscaled")],
    ));
}

#[test]
fn fault_truncate_k_skips_the_last_terms() {
    check_cheap_mode("truncate-k", "0.5", "truncate-k:0.5");
    check_fault_mode("truncate-k", "0.25", "truncate-k:0.25");
    // The program checks how many terms were kept.
    assert_fails(&normal_faults(
        "truncate-k",
        "0.25",
        "all",
        &[("SIMGPU_FAULT", "truncate-k:0.5")],
    ));
    // Keeping every term is honest.
    assert_all_pass(&faults("none", "0", "all", Some("truncate-k:1")), 24);
}

#[test]
fn cheap_faults_leave_integer_gemms_honest_except_truncate_k() {
    // simgpu_gemm covers every type combination; its COMPUTE_32I cases
    // (int8 inputs, integer sums) are named ".../32I".
    let exe = compile("simgpu_gemm");
    for spec in ["precision:fp8-rowscaled", "precision:int8-rowscaled"] {
        let r = run(&exe, &[], &[("SIMGPU_FAULT", spec)]);
        assert_fails(&r);
        assert!(
            !r.failures().iter().any(|l| l.contains("/32I")),
            "{spec} changed an integer GEMM\n{}",
            r.transcript()
        );
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains("/32I")),
            "{}",
            r.transcript()
        );
    }
    let r = run(&exe, &[], &[("SIMGPU_FAULT", "truncate-k:0.5")]);
    assert!(
        r.failures().iter().any(|l| l.contains("/32I")),
        "truncate-k left integer GEMMs alone\n{}",
        r.transcript()
    );
}

#[test]
fn cheap_faults_follow_after_and_prob() {
    let int8 = "precision:int8-rowscaled,after:6";
    assert_all_pass(
        &normal_faults("int8-rowscaled", "0", "after:6", &[("SIMGPU_FAULT", int8)]),
        12,
    );
    assert_fails(&normal_faults(
        "int8-rowscaled",
        "0",
        "after:5",
        &[("SIMGPU_FAULT", int8)],
    ));
    assert_fails(&normal_faults(
        "int8-rowscaled",
        "0",
        "after:7",
        &[("SIMGPU_FAULT", int8)],
    ));
    assert_all_pass(
        &faults(
            "truncate-k",
            "0.5",
            "after:10",
            Some("truncate-k:0.5,after:10"),
        ),
        24,
    );
    for (mode, param, spec) in [
        ("fp8-rowscaled", "0", "precision:fp8-rowscaled,prob:0.5"),
        ("int8-rowscaled", "0", "precision:int8-rowscaled,prob:0.5"),
        ("truncate-k", "0.5", "truncate-k:0.5,prob:0.5"),
    ] {
        // "some": every call is either faulted as the mode says or honest,
        // and there are both; another seed hits other calls.
        let r = normal_faults(mode, param, "some", &[("SIMGPU_FAULT", spec)]);
        assert_all_pass(&r, 12);
        assert_all_pass(&faults(mode, param, "some", Some(spec)), 24);
        let other_seed = normal_faults(
            mode,
            param,
            "some",
            &[("SIMGPU_FAULT", spec), ("SIMGPU_FAULT_SEED", "99")],
        );
        assert_all_pass(&other_seed, 12);
        assert_ne!(digests(&r), digests(&other_seed), "{spec}");
    }
}

#[test]
fn fault_prob_hits_a_seeded_fraction_of_calls() {
    let spec = "perturb:0.25,prob:0.5";
    let r = faults("perturb", "0.25", "some", Some(spec));
    assert_all_pass(&r, 24);
    // Seeded: the same seed hits the same calls; another seed others.
    let again = faults("perturb", "0.25", "some", Some(spec));
    assert_eq!(r.stdout, again.stdout);
    let exe = compile("simgpu_faults");
    let other = run(
        &exe,
        &["perturb", "0.25", "some"],
        &[("SIMGPU_FAULT", spec), ("SIMGPU_FAULT_SEED", "99")],
    );
    assert_all_pass(&other, 24);
    assert_ne!(r.stdout, other.stdout);
}

#[test]
fn fault_after_spares_the_first_calls() {
    assert_all_pass(
        &faults("perturb", "0.25", "after:10", Some("perturb:0.25,after:10")),
        24,
    );
    assert_fails(&faults(
        "perturb",
        "0.25",
        "after:5",
        Some("perturb:0.25,after:10"),
    ));
}

#[test]
fn bad_fault_spec_refuses_to_start() {
    let r = faults("none", "0", "all", Some("perturb"));
    assert_eq!(r.code, Some(2), "{}", r.transcript());
    assert!(r.stderr.contains("SIMGPU_FAULT"), "{}", r.transcript());
    for spec in [
        "truncate-k:0",
        "truncate-k:1.5",
        "truncate-k:-0.5",
        "truncate-k:nan",
        "truncate-k",
        "precision:fp9",
        "precision:int8",
        "precision:fp8-rowscaled,precision:int8-rowscaled",
    ] {
        let r = faults("none", "0", "all", Some(spec));
        assert_eq!(r.code, Some(2), "{spec}: {}", r.transcript());
        let item = spec.rsplit(',').next().expect("an item");
        assert!(
            r.stderr.contains(&format!("cannot parse '{item}'")),
            "{spec}: {}",
            r.transcript()
        );
    }
}

fn digests(r: &Run) -> Vec<&str> {
    r.stdout
        .lines()
        .filter(|l| l.starts_with("digest"))
        .collect()
}

#[test]
fn splitk_changes_the_last_bits_but_stays_within_tolerance() {
    let exe = compile("simgpu_faults");
    let plain = run(&exe, &["none", "0", "all"], &[]);
    let split = run(&exe, &["none", "0", "all"], &[("SIMGPU_SPLITK", "5")]);
    let again = run(&exe, &["none", "0", "all"], &[("SIMGPU_SPLITK", "5")]);
    assert_all_pass(&plain, 24);
    assert_all_pass(&split, 24);
    assert_ne!(
        digests(&plain),
        digests(&split),
        "split-k changed no result"
    );
    assert_eq!(
        digests(&split),
        digests(&again),
        "split-k is not reproducible"
    );
    // The GEMM matrix still passes under split-k.
    assert_all_pass(
        &run(&compile("simgpu_gemm"), &[], &[("SIMGPU_SPLITK", "3")]),
        800,
    );
}

#[test]
fn work_is_asynchronous_and_ordered_like_a_gpu() {
    let r = run(
        &compile("simgpu_ordering"),
        &[],
        &[("SIMGPU_LATENCY_US", "50000")],
    );
    assert_all_pass(&r, 30);
}

#[test]
fn driver_api_runs_ptx_kernels_through_cpu_twins() {
    let r = run(
        &compile("simgpu_kernel"),
        &[],
        &[("SIMGPU_LATENCY_US", "20000")],
    );
    assert_all_pass(&r, 40);
    assert!(r.stderr.contains("has no CPU twin"), "{}", r.transcript());
}

#[test]
fn graphs_replay_captured_work() {
    let r = run(
        &compile("simgpu_graph"),
        &[],
        &[("SIMGPU_LATENCY_US", "5000")],
    );
    assert_all_pass(&r, 20);
}

#[test]
fn gather_kernel_ptx_runs_through_its_twin_and_matches_the_host() {
    // The committed PTX, loaded as the interposer loads it; every case states
    // what it gathers in matrix terms and is compared with host copies.
    let ptx = repo_root().join("cuda/gather.ptx");
    let r = run(
        &compile("simgpu_gather"),
        &[ptx.to_str().expect("UTF-8 path")],
        &[("SIMGPU_LATENCY_US", "200")],
    );
    assert_all_pass(&r, 50);
    assert!(
        r.stdout
            .contains("synchronising reports the illegal address"),
        "{}",
        r.transcript()
    );
}

#[test]
fn gather_program_loads_the_ptx_it_is_given() {
    // Rename the kernel in a copy of the PTX: the program must not find it,
    // so the test above really ran the committed module's entry.
    let text =
        std::fs::read_to_string(repo_root().join("cuda/gather.ptx")).expect("read cuda/gather.ptx");
    let renamed = text.replace("mmaudit_gather", "mmaudit_renamed");
    let dir = repo_root().join("target/simgpu");
    std::fs::create_dir_all(&dir).expect("create target/simgpu");
    let path = dir.join(format!("gather-renamed.{}.ptx", std::process::id()));
    std::fs::write(&path, renamed).expect("write the renamed PTX");
    let r = run(
        &compile("simgpu_gather"),
        &[path.to_str().expect("UTF-8 path")],
        &[],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.code, Some(2), "{}", r.transcript());
    assert!(
        r.stdout.contains("cuModuleGetFunction"),
        "{}",
        r.transcript()
    );
}

// ---- the commitment kernels ----

/// Leaves of the tree that `simgpu_commit` reduces: vector `i` is `i + 1` bytes,
/// each `i as u8` (the pinned vectors of protocol/src/commit/tests.rs).
const COMMIT_TREE_LEAVES: usize = 4097;

/// `tree_root` of the first 0..8 of those leaves, pinned in protocol/src/commit/tests.rs
/// (computed there with the PyPI `blake3` package and RFC 6962's recursive MTH).
const PINNED_ROOTS: [&str; 8] = [
    "f55abadb5f650f83e3856e52225a0e08f58f47d047a7961907b51f5062b0403d",
    "61187df22a46a9fc442b3f5a960468f407564dc49305c72c0c74acd984cfe955",
    "b6d81138eb1efceb0978d070566ccb0eb125fa395cc349a50726dfcff74a0603",
    "b39e60271232566cdf1b8896b0c5848032503995bda6d61bd2eb001b017c42d5",
    "dffef69f9d3903e2bc125a4520a3bdf8a4040c3c12ffdd23ac23dc0ca126855d",
    "fcc827a51e31ef6af51bab0eb4e6a5ddf133c0ba7ea8d4f3e28024acd826e343",
    "d04f5ef49329dab818a5b17c4bcaa40262321394020210c1368fbdcd67f92c68",
    "26e6d087c3949b1abb8b7915aa52463176894988f17442667541a4f7062089fa",
];
/// The pinned leaf hash of the 2048 + 5 bytes `j * 7` (protocol/src/commit/tests.rs).
const PINNED_LEAF_2053: &str = "bd754789b5630dad0a3f73856d5017b6a04078b41b6197de43dd8c7e44cc56f2";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digit"))
        .collect()
}

/// What `simgpu_commit` printed, each hash recomputed with `mmaudit_protocol::commit`.
#[derive(Default)]
struct CommitCheck {
    /// `LEAF` lines, and the distinct vector lengths in bytes they cover
    leaves: usize,
    vector_bytes: BTreeSet<usize>,
    /// `TREELEAF` lines and the leaf counts of the `ROOT` lines
    tree_leaves: usize,
    root_counts: BTreeSet<usize>,
    /// every line whose hash is not the reference's
    mismatches: Vec<String>,
}

fn check_commit_output(stdout: &str) -> CommitCheck {
    let tree: Vec<Hash> = (0..COMMIT_TREE_LEAVES)
        .map(|i| leaf_hash(&vec![i as u8; i + 1]))
        .collect();
    let mut c = CommitCheck::default();
    for line in stdout.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (got, want) = match f[0] {
            // LEAF <case> <b> <v> <bytes or -> <hash>
            "LEAF" => {
                assert_eq!(f.len(), 6, "malformed line {line:.200}");
                let bytes = if f[4] == "-" { vec![] } else { unhex(f[4]) };
                c.leaves += 1;
                c.vector_bytes.insert(bytes.len());
                (f[5], hex(&leaf_hash(&bytes)))
            }
            // TREELEAF <i> <hash>
            "TREELEAF" => {
                let i: usize = f[1].parse().expect("leaf index");
                c.tree_leaves += 1;
                (f[2], hex(&tree[i]))
            }
            // ROOT <count> <root>
            "ROOT" => {
                let count: usize = f[1].parse().expect("leaf count");
                c.root_counts.insert(count);
                (f[2], hex(&tree_root(&tree[..count])))
            }
            _ => continue,
        };
        if got != want {
            c.mismatches
                .push(format!("{:.120}: kernel {got}, reference {want}", line));
        }
    }
    c
}

fn run_commit_program() -> Run {
    let ptx = repo_root().join("cuda/gather.ptx");
    run(
        &compile("simgpu_commit"),
        &[ptx.to_str().expect("UTF-8 path")],
        &[("SIMGPU_LATENCY_US", "200")],
    )
}

/// Asserts that every hash `simgpu_commit` printed is the reference's, and that it
/// printed what its cases promise: the lengths, the tree's leaves and roots, the
/// pinned vectors, the malformed jobs.
fn assert_commit_run_matches_the_protocol(r: &Run) {
    assert_all_pass(r, 300);
    let c = check_commit_output(&r.stdout);
    assert!(
        c.mismatches.is_empty(),
        "{} hashes differ from the reference:\n{}",
        c.mismatches.len(),
        c.mismatches.join("\n")
    );
    assert!(c.leaves >= 180, "only {} LEAF lines", c.leaves);
    // Lengths around BLAKE3's 64-byte blocks and 1024-byte chunks, for every
    // element size, up to trees of more than 256 and 512 chunks.
    const BYTES: [usize; 26] = [
        0,
        1,
        2,
        4,
        8,
        63,
        64,
        65,
        126,
        128,
        130,
        252,
        256,
        260,
        504,
        512,
        520,
        1024,
        1025,
        1026,
        1028,
        1032,
        2053,
        10_000,
        300 * 1024 - 1,
        513 * 1024 + 8,
    ];
    for bytes in BYTES {
        assert!(
            c.vector_bytes.contains(&bytes),
            "no vector of {bytes} bytes: {:?}",
            c.vector_bytes
        );
    }
    assert_eq!(c.tree_leaves, COMMIT_TREE_LEAVES);
    for count in (0..=40).chain([1000, 4096, COMMIT_TREE_LEAVES]) {
        assert!(c.root_counts.contains(&count), "no root of {count} leaves");
    }
    // The protocol's pinned vectors, exactly.
    for (count, root) in PINNED_ROOTS.iter().enumerate() {
        assert!(
            r.stdout.contains(&format!("\nROOT {count} {root}\n")),
            "pinned root of {count} leaves missing\n{}",
            r.transcript()
        );
    }
    let pinned: Vec<u8> = (0..2048 + 5).map(|j| (j * 7) as u8).collect();
    assert!(
        r.stdout
            .contains(&format!(" {} {PINNED_LEAF_2053}\n", hex(&pinned))),
        "pinned leaf hash of the 2053-byte vector missing"
    );
    assert!(
        r.stdout
            .contains("malformed job skipped, output untouched: nb*nv*32 overflowing 64 bits"),
        "{}",
        r.transcript()
    );
}

#[test]
fn commit_kernels_ptx_run_through_their_twins_and_match_the_protocol() {
    // The committed PTX's mmaudit_commit_leaves and mmaudit_commit_tree, on
    // vectors the program describes in matrix terms; every hash printed is
    // recomputed here with mmaudit_protocol::commit.
    let r = run_commit_program();
    assert_commit_run_matches_the_protocol(&r);
    assert!(
        r.stdout
            .contains("synchronising reports the illegal address"),
        "{}",
        r.transcript()
    );
}

#[test]
fn commit_kernel_source_run_on_the_cpu_matches_the_protocol() {
    // Not the twins: cuda/gather.cu itself, compiled for the host behind the
    // driver calls of the same program (tests/programs/host_cuda.cpp: blocks one
    // after another, threads as coroutines switched at __syncthreads). Its
    // parallel chunk hashing, shared-memory reductions and subtree stacks, for
    // every launch geometry the program uses, give the reference's hashes.
    let ptx = repo_root().join("cuda/gather.ptx");
    let r = run(
        &compile_host_cuda("simgpu_commit"),
        &[ptx.to_str().expect("UTF-8 path"), "--no-fault"],
        &[],
    );
    assert_commit_run_matches_the_protocol(&r);
    assert!(!r.stdout.contains("illegal address"), "{}", r.transcript());
}

#[test]
fn commit_check_notices_a_wrong_hash_a_wrong_byte_and_a_wrong_root() {
    // The comparison above on the same run, altered: a changed hash, a changed
    // vector byte and a changed root are each reported.
    let r = run_commit_program();
    let flip = |line: &str, at: usize| -> String {
        let mut b = line.as_bytes().to_vec();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).expect("ASCII")
    };
    let lines: Vec<&str> = r.stdout.lines().collect();
    let leaf = lines
        .iter()
        .position(|l| l.starts_with("LEAF ") && !l.contains(" - "))
        .expect("a LEAF line");
    let root = lines
        .iter()
        .position(|l| l.starts_with("ROOT 40 "))
        .expect("the root of 40 leaves");
    let bytes_at = lines[leaf].match_indices(' ').nth(3).expect("fields").0 + 1;
    for (i, at) in [
        (leaf, lines[leaf].len() - 1),
        (leaf, bytes_at),
        (root, lines[root].len() - 5),
    ] {
        let mut altered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        altered[i] = flip(lines[i], at);
        let c = check_commit_output(&altered.join("\n"));
        assert_eq!(c.mismatches.len(), 1, "altered line {i} at {at}");
    }
    assert!(check_commit_output(&r.stdout).mismatches.is_empty());
}

#[test]
fn commit_program_loads_the_ptx_it_is_given() {
    // Without the commit entries in the PTX the program must not run, so the
    // tests above really ran the committed module's kernels.
    let text =
        std::fs::read_to_string(repo_root().join("cuda/gather.ptx")).expect("read cuda/gather.ptx");
    let renamed = text.replace("mmaudit_commit_tree", "mmaudit_renamed_tree");
    let dir = repo_root().join("target/simgpu");
    std::fs::create_dir_all(&dir).expect("create target/simgpu");
    let path = dir.join(format!("commit-renamed.{}.ptx", std::process::id()));
    std::fs::write(&path, renamed).expect("write the renamed PTX");
    let r = run(
        &compile("simgpu_commit"),
        &[path.to_str().expect("UTF-8 path")],
        &[],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.code, Some(2), "{}", r.transcript());
    assert!(
        r.stdout.contains("cuModuleGetFunction"),
        "{}",
        r.transcript()
    );
}
