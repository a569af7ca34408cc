use super::*;
use crate::call::tests::sample_call;
use crate::config::PPM;

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Vector `i` of the pinned vectors: `i + 1` bytes, each `i`.
fn vector(i: usize) -> Vec<u8> {
    vec![i as u8; i + 1]
}

fn leaves(count: usize) -> Vec<Hash> {
    (0..count).map(|i| leaf_hash(&vector(i))).collect()
}

// Computed from docs/COMMIT.md's definitions with the PyPI `blake3` package and RFC
// 6962's recursive MTH and PATH (not this module's level-by-level code).
const LEAF_KEY: &str = "adf49469054d69d7e3f279d35f9af615282bca6deac565b253c5814decb7c27c";
const NODE_KEY: &str = "8aced5c2ab27c97b16a976c33cda2450abe1bd7230cb8701b63a9252ecd426d0";
const ROOTS: [&str; 8] = [
    "f55abadb5f650f83e3856e52225a0e08f58f47d047a7961907b51f5062b0403d",
    "61187df22a46a9fc442b3f5a960468f407564dc49305c72c0c74acd984cfe955",
    "b6d81138eb1efceb0978d070566ccb0eb125fa395cc349a50726dfcff74a0603",
    "b39e60271232566cdf1b8896b0c5848032503995bda6d61bd2eb001b017c42d5",
    "dffef69f9d3903e2bc125a4520a3bdf8a4040c3c12ffdd23ac23dc0ca126855d",
    "fcc827a51e31ef6af51bab0eb4e6a5ddf133c0ba7ea8d4f3e28024acd826e343",
    "d04f5ef49329dab818a5b17c4bcaa40262321394020210c1368fbdcd67f92c68",
    "26e6d087c3949b1abb8b7915aa52463176894988f17442667541a4f7062089fa",
];
const PATHS_OF_7: [(usize, &[&str]); 3] = [
    (
        0,
        &[
            "15fc47684df647b73c07bb521c5a3889c932b835304db6647d968e3fe51921d8",
            "0984420d32873c2719d1e8879f8fc86922e6a3dfd7d0eea9427328c6fc233388",
            "138a043605b4b887ee7a4a9a1a94f37fb38f6b64ecaef51004d6ee8b9e5a85c4",
        ],
    ),
    (
        4,
        &[
            "19c92d730c97b1876278aad803598bae88be18934305750261c18eb1b1d8e8cf",
            "b9790c001856656e23ec1a3ba8f1198bce3f6c33949d9ccd3fc0c02cbe8bcdba",
            "dffef69f9d3903e2bc125a4520a3bdf8a4040c3c12ffdd23ac23dc0ca126855d",
        ],
    ),
    (
        6,
        &[
            "9871e2ae80d8316f15ab64918b2530b89e5a2cff3c6acbc893fa4e6db02467fa",
            "dffef69f9d3903e2bc125a4520a3bdf8a4040c3c12ffdd23ac23dc0ca126855d",
        ],
    ),
];

#[test]
fn pinned_vectors() {
    assert_eq!(hex(&leaf_key()), LEAF_KEY);
    assert_eq!(hex(&node_key()), NODE_KEY);
    for (count, root) in ROOTS.iter().enumerate() {
        assert_eq!(hex(&tree_root(&leaves(count))), *root, "{count} leaves");
    }
    let all = leaves(7);
    for (index, path) in PATHS_OF_7 {
        let got: Vec<String> = audit_path(&all, index).unwrap().iter().map(hex).collect();
        assert_eq!(got, *path, "leaf {index} of 7");
    }
    // A vector over one BLAKE3 chunk (1024 bytes) hashes as BLAKE3's tree does.
    let big: Vec<u8> = (0..2048 + 5).map(|j| (j * 7) as u8).collect();
    assert_eq!(
        hex(&leaf_hash(&big)),
        "bd754789b5630dad0a3f73856d5017b6a04078b41b6197de43dd8c7e44cc56f2"
    );
}

#[test]
fn every_path_proves_its_leaf_and_nothing_else() {
    for count in 1..=40usize {
        let ls = leaves(count);
        let root = tree_root(&ls);
        for i in 0..count {
            let path = audit_path(&ls, i).unwrap();
            assert_eq!(path.len() as u64, path_len(i as u64, count as u64));
            assert!(path.len() as u64 <= depth(count as u64));
            assert!(verify_path(&root, &ls[i], i as u64, count as u64, &path));
            // Another leaf, index, count, root or a changed sibling: refused.
            let other = leaf_hash(b"not a leaf of the tree");
            assert!(!verify_path(&root, &other, i as u64, count as u64, &path));
            if count > 1 {
                let j = (i + 1) % count;
                assert!(
                    !verify_path(&root, &ls[i], j as u64, count as u64, &path),
                    "{count} {i} as {j}"
                );
            }
            // (A path can also fit a larger count whose extra leaves hide under an
            // opaque sibling: the count is never the prover's word, it comes from the
            // call's shape.)
            assert!(!verify_path(
                &root,
                &ls[i],
                count as u64,
                count as u64,
                &path
            ));
            let mut bad_root = root;
            bad_root[0] ^= 1;
            assert!(!verify_path(
                &bad_root,
                &ls[i],
                i as u64,
                count as u64,
                &path
            ));
            for p in 0..path.len() {
                let mut bad = path.clone();
                bad[p][31] ^= 0x80;
                assert!(!verify_path(&root, &ls[i], i as u64, count as u64, &bad));
            }
            let mut long = path.clone();
            long.push(root);
            assert!(!verify_path(&root, &ls[i], i as u64, count as u64, &long));
            if !path.is_empty() {
                let short = &path[..path.len() - 1];
                assert!(!verify_path(&root, &ls[i], i as u64, count as u64, short));
            }
        }
        assert_eq!(audit_path(&ls, count), None);
    }
    assert!(!verify_path(&leaf_hash(&[]), &leaf_hash(&[]), 0, 0, &[]));
}

#[test]
fn a_leaf_and_a_node_never_hash_alike() {
    // The same 64 bytes as a vector and as two children give different hashes: a node
    // cannot be passed off as a leaf or the reverse.
    let (l, r) = (leaf_hash(b"l"), leaf_hash(b"r"));
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(&l);
    both[32..].copy_from_slice(&r);
    assert_ne!(leaf_hash(&both), node_hash(&l, &r));
}

fn binding() -> CallBinding {
    CallBinding {
        a: Side::Inline(leaf_hash(b"a")),
        b: Side::Reference {
            tensor: 3,
            matrices: vec![],
        },
        c: tree_root(&[]),
        d: leaf_hash(b"d"),
        small: *blake3::hash(b"").as_bytes(),
    }
}

#[test]
fn the_commitment_covers_the_call_and_every_part() {
    let call = sample_call(5, 64, 32, 16);
    let base = call_commitment(&call, &binding());
    let mut changed = vec![call_commitment(&sample_call(6, 64, 32, 16), &binding())];
    let mut vary = |f: &dyn Fn(&mut CallBinding)| {
        let mut b = binding();
        f(&mut b);
        changed.push(call_commitment(&call, &b));
    };
    vary(&|b| b.a = Side::Inline(leaf_hash(b"A")));
    vary(&|b| {
        b.b = Side::Reference {
            tensor: 4,
            matrices: vec![],
        }
    });
    vary(&|b| {
        b.b = Side::Reference {
            tensor: 3,
            matrices: vec![0],
        }
    });
    vary(&|b| b.c = leaf_hash(b"c"));
    vary(&|b| b.d = leaf_hash(b"D"));
    vary(&|b| b.small = [0; 32]);
    // An inline root equal to a reference's bytes still differs (the kind byte).
    vary(&|b| {
        let mut root = [0u8; 32];
        root[..8].copy_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
        b.b = Side::Inline(root);
    });
    for (i, c) in changed.iter().enumerate() {
        assert_ne!(*c, base, "variation {i}");
    }
}

#[test]
fn challenges_follow_the_call_rate_and_depend_on_the_commitment_and_the_key() {
    let config = SamplingConfig::default();
    let ch = Challenger::new([7; 32], [1; 16], config);
    let commit = |i: u64| *blake3::hash(&i.to_le_bytes()).as_bytes();
    let n = 20_000u64;
    let hits = (0..n)
        .filter(|&i| {
            ch.challenge(&sample_call(i, 64, 64, 64), &commit(i))
                .is_some()
        })
        .count();
    // 10% of 20 000: binomial sd ~42.
    assert!((1800..2200).contains(&hits), "{hits}");

    // The same call under another commitment, key or nonce: an independent draw.
    let all = SamplingConfig {
        call_ppm: PPM,
        ..config
    };
    let plans = |ch: &Challenger, salt: u8| -> Vec<Plan> {
        (0..200)
            .map(|i| {
                let mut c = commit(i);
                c[0] ^= salt;
                ch.challenge(&sample_call(i, 1000, 1000, 8), &c).unwrap()
            })
            .collect()
    };
    let base = plans(&Challenger::new([7; 32], [1; 16], all), 0);
    for other in [
        plans(&Challenger::new([7; 32], [1; 16], all), 1),
        plans(&Challenger::new([8; 32], [1; 16], all), 0),
        plans(&Challenger::new([7; 32], [2; 16], all), 0),
    ] {
        let same = base.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(same < 5, "{same} of 200 plans unchanged");
    }
    // Plans have the schedule's sizes, sorted and in range.
    for p in &base {
        assert_eq!((p.rows.len(), p.cols.len(), p.batches.len()), (10, 1, 1));
        assert!(p.rows.windows(2).all(|w| w[0] < w[1]) && p.rows[9] < 1000);
    }
    // Calls that cannot be checked are never challenged.
    let all_ch = Challenger::new([7; 32], [1; 16], all);
    assert!(all_ch
        .challenge(&sample_call(0, 0, 4, 4), &commit(0))
        .is_none());
    let mut flagged = sample_call(0, 4, 4, 4);
    flagged.flags |= crate::call::flags::NO_SESSION;
    assert!(all_ch.challenge(&flagged, &commit(0)).is_none());
}

#[test]
fn only_the_challenge_key_issues_nonces() {
    let (k, other) = ([5u8; 32], [6u8; 32]);
    let n = issue_nonce(&k, *b"12345678");
    assert!(nonce_issued(&k, &n));
    assert!(!nonce_issued(&other, &n));
    for i in 0..16 {
        let mut bad = n;
        bad[i] ^= 1;
        assert!(!nonce_issued(&k, &bad), "byte {i}");
    }
    assert!(!nonce_issued(&k, &[0xab; 16]));
}

#[test]
fn the_whole_tree_gives_rfc_6962_roots_and_paths() {
    // Tree (levels built once, what the library keeps) against audit_path (RFC 6962's
    // recursive PATH) and the pinned roots.
    assert_eq!(Tree::new(Vec::new()).root(), leaf_hash(&[]));
    assert_eq!(Tree::new(Vec::new()).path(0), None);
    for count in 1..=70usize {
        let ls = leaves(count);
        let tree = Tree::new(ls.clone());
        assert_eq!(tree.root(), tree_root(&ls), "{count}");
        assert_eq!(tree.leaves(), count);
        assert!(
            tree.hashes() as u64 <= 2 * count as u64 + depth(count as u64),
            "{count}"
        );
        for i in 0..count {
            assert_eq!(tree.path(i), audit_path(&ls, i), "{count} {i}");
        }
        assert_eq!(tree.path(count), None);
    }
}
