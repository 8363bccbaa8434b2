//! What the fuzz targets share: structured inputs built with `arbitrary` (so the fuzzer spends
//! its time on policies, sessions and event streams rather than on bytes that do not parse), and
//! small reference models the targets check the real code against. See `docs/fuzzing.md`.
//!
//! Everything here is deliberately simple and independent of the code under test: a model that
//! shared the code's logic would share its bugs.

#![deny(unsafe_code)]

pub mod cast;
pub mod policy;
pub mod seeds;

use arbitrary::{Arbitrary, Result, Unstructured};

/// A string that is usually one of a few names, so that selectors, approvers, commands and label
/// values drawn independently still meet; otherwise any string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name(pub String);

const NAMES: &[&str] = &[
    "",
    "a",
    "b",
    "app",
    "web",
    "prod",
    "team",
    "alice",
    "bob",
    "carol",
    "sre",
    "dev",
    "ls",
    "/bin/ls",
    "sh",
    "/",
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
];

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(7u8, 8u8)? {
            Ok(Name((*u.choose(NAMES)?).to_owned()))
        } else {
            Ok(Name(String::arbitrary(u)?))
        }
    }
}

/// At most `max` items, so that one input cannot ask for unbounded work.
pub fn bounded_vec<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>, max: usize) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| T::arbitrary(u)).collect()
}

/// Names as plain strings.
pub fn strings(names: Vec<Name>) -> Vec<String> {
    names.into_iter().map(|n| n.0).collect()
}
