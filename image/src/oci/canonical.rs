//! Canonical JSON: object keys sorted, no insignificant whitespace.
//!
//! oci-spec keeps labels and annotations in `HashMap`s, whose iteration order
//! changes from run to run. Serializing through `serde_json::Value` (whose
//! maps are `BTreeMap`s without the `preserve_order` feature) sorts every
//! object's keys, so the same image always has the same digest.

use serde::Serialize;

/// Serializes `value` canonically.
pub fn to_vec<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let v = serde_json::to_value(value)?;
    serde_json::to_vec(&v)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn keys_are_sorted_whatever_the_map_order() {
        let mut outputs = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let m: HashMap<String, u32> = (0..30).map(|i| (format!("k{i}"), i)).collect();
            outputs.insert(super::to_vec(&m).unwrap());
        }
        assert_eq!(outputs.len(), 1);
        let s = String::from_utf8(outputs.into_iter().next().unwrap()).unwrap();
        assert!(s.starts_with("{\"k0\":0,\"k1\":1,\"k10\":10"), "{s}");
    }
}
