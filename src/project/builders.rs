//! Several builders in one spec: the shape of the `builder` table (one
//! unnamed `[builder]` or several `[builder.NAME]`), which builder each
//! rule runs in, and the order builders run in.
//!
//! Builders form a DAG: one depends on another when it starts from it
//! (`from = "builder:NAME"`), when one of its rules mounts a tapeout of
//! the other, or when one of its rules is `after` a rule of the other.
//! Builders are kept in an order where each comes after those it depends
//! on, so keys (which chain through those dependencies) can be computed
//! in one pass and independent builders can run at the same time.

use super::{
    did_you_mean, order_ids, Builder, BuilderState, Ctx, RawBuilder, RawImage, RawSpec, SpecError,
    Step,
};
use indexmap::IndexMap;
use serde_spanned::Spanned;
use std::collections::{BTreeMap, BTreeSet};

/// A spec with its builders by name (the single `[builder]` table, or
/// none, is the builder named "").
pub(super) type Raw = RawSpec<IndexMap<String, Spanned<RawBuilder>>>;

/// The keys of a single builder table: a `builder` table with any of
/// them (or with a value that is not a table) is one builder.
const SINGLE_KEYS: &[&str] = &[
    "from", "after", "sources", "network", "env", "host-ca", "cache",
];

/// Reads the spec, deciding first whether `builder` is one builder or a
/// table of named ones.
pub(super) fn parse_raw(cx: &Ctx) -> Result<Raw, SpecError> {
    let named = toml::from_str::<toml::Table>(cx.text)
        .ok()
        .and_then(|t| t.get("builder").cloned())
        .and_then(|b| b.as_table().cloned())
        .is_some_and(|b| {
            !b.is_empty()
                && b.iter()
                    .all(|(k, v)| v.is_table() && !SINGLE_KEYS.contains(&k.as_str()))
        });
    if named {
        let raw: Raw = super::parse_toml(cx)?;
        return Ok(raw);
    }
    let raw: RawSpec<Spanned<RawBuilder>> = super::parse_toml(cx)?;
    let one = raw.builder.unwrap_or_else(|| {
        Spanned::new(
            0..0,
            RawBuilder {
                from: super::default_from(),
                after: None,
                sources: IndexMap::new(),
                network: None,
                env: IndexMap::new(),
                host_ca: false,
                cache: IndexMap::new(),
            },
        )
    });
    Ok(RawSpec {
        builder: Some(IndexMap::from([(String::new(), one)])),
        build: raw.build,
        tapeout: raw.tapeout,
        image: raw.image,
        pod: raw.pod,
    })
}

/// How errors name a builder's table.
pub(super) fn key(name: &str) -> String {
    if name.is_empty() {
        "builder".into()
    } else {
        format!("builder.{name}")
    }
}

/// The builder a rule names, or the only one.
pub(super) fn which(
    cx: &Ctx,
    id: &str,
    named: Option<&Spanned<String>>,
    names: &[&str],
    span: std::ops::Range<usize>,
) -> Result<usize, SpecError> {
    match named {
        Some(n) => by_name(cx, &format!("{id}.builder"), n, names),
        None if names.len() == 1 => Ok(0),
        None => Err(cx.err(
            span,
            format!(
                "{id}: which builder runs it? add builder = \"NAME\" (builders: {})",
                names.join(", ")
            ),
        )),
    }
}

/// A builder by name, or an error with a "did you mean".
fn by_name(cx: &Ctx, what: &str, n: &Spanned<String>, names: &[&str]) -> Result<usize, SpecError> {
    let want = n.get_ref().as_str();
    if let Some(i) = names.iter().position(|b| *b == want && !b.is_empty()) {
        return Ok(i);
    }
    if names == [""] {
        return Err(cx.err(
            n.span(),
            format!("{what} = {want:?}: the spec has one unnamed [builder]; name builders with [builder.NAME] tables"),
        ));
    }
    let hint = did_you_mean(want, names.iter().copied())
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    Err(cx.err(
        n.span(),
        format!(
            "{what}: unknown builder `{want}` (builders: {}){hint}",
            names.join(", ")
        ),
    ))
}

/// Each tapeout's builder: the one it names, else that of the rules it
/// is `after` (which must all be of one builder), else the only one.
pub(super) fn tapeout_owners(
    cx: &Ctx,
    raw: &Raw,
    names: &[&str],
    owner: &mut BTreeMap<String, usize>,
) -> Result<(), SpecError> {
    // Explicit ones first: an inferred one may follow an explicit one.
    let mut left: Vec<&String> = Vec::new();
    for (name, t) in &raw.tapeout {
        let id = format!("tapeout.{name}");
        match &t.get_ref().builder {
            Some(b) => {
                let which = by_name(cx, &format!("{id}.builder"), b, names)?;
                owner.insert(id, which);
            }
            None if names.len() == 1 => {
                owner.insert(id, 0);
            }
            None => left.push(name),
        }
    }
    // Inferred ones in rounds, each from those already known.
    while !left.is_empty() {
        let before = left.len();
        let mut still = Vec::new();
        for name in left {
            let t = raw.tapeout[name].get_ref();
            let id = format!("tapeout.{name}");
            let of: Option<BTreeSet<usize>> = t
                .after
                .iter()
                .map(|a| owner.get(a.get_ref()).copied())
                .collect();
            match of {
                Some(set) if set.len() == 1 => {
                    owner.insert(id, set.into_iter().next().unwrap_or_default());
                }
                Some(set) if set.len() > 1 => {
                    return Err(cx.err(
                        raw.tapeout[name].span(),
                        format!("{id}: its `after` rules run in different builders; say which builder it selects from with builder = \"NAME\""),
                    ))
                }
                Some(_) => {
                    return Err(cx.err(
                        raw.tapeout[name].span(),
                        format!(
                            "{id}: which builder does it select from? add builder = \"NAME\" (builders: {})",
                            names.join(", ")
                        ),
                    ))
                }
                None => still.push(name),
            }
        }
        if still.len() == before {
            let name = still[0];
            return Err(cx.err(
                raw.tapeout[name].span(),
                format!(
                    "tapeout.{name}: which builder does it select from? add builder = \"NAME\""
                ),
            ));
        }
        left = still;
    }
    Ok(())
}

/// The state after a builder's rule `after` (a `build.NAME` of that
/// builder), or after its last rule.
fn state_after(
    cx: &Ctx,
    what: &str,
    builder: usize,
    b: &Builder,
    after: Option<&Spanned<String>>,
) -> Result<BuilderState, SpecError> {
    let upto = match after {
        Some(a) => {
            let i = b.steps.iter().position(|s| s.id() == *a.get_ref());
            match i {
                Some(i) if matches!(b.steps[i], Step::Build(_)) => i + 1,
                _ => {
                    let rules: Vec<String> = (b.steps.iter())
                        .filter(|s| matches!(s, Step::Build(_)))
                        .map(Step::id)
                        .collect();
                    return Err(cx.err(
                        a.span(),
                        format!(
                            "{what} = {:?}: not a rule of builder {} (its rules: {})",
                            a.get_ref(),
                            b.name,
                            if rules.is_empty() {
                                "none".to_string()
                            } else {
                                rules.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        None => b
            .steps
            .iter()
            .rposition(|s| matches!(s, Step::Build(_)))
            .map_or(0, |i| i + 1),
    };
    Ok(BuilderState { builder, upto })
}

/// Resolves `from = "builder:NAME"` parents and returns an order of the
/// builders in which each comes after those it depends on (stable: the
/// order written where dependencies allow). A cycle is an error.
pub(super) fn order(
    cx: &Ctx,
    raw: &Raw,
    built: &mut [Builder],
    mut edges: BTreeSet<(usize, usize)>,
) -> Result<Vec<usize>, SpecError> {
    let raws: Vec<&Spanned<RawBuilder>> = raw.builder.iter().flat_map(|m| m.values()).collect();
    let names: Vec<String> = built.iter().map(|b| b.name.clone()).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    for i in 0..built.len() {
        let Some(parent) = built[i].from.strip_prefix("builder:").map(str::to_string) else {
            continue;
        };
        let rb = raws[i].get_ref();
        let what = format!("{}.from", key(&names[i]));
        let p = by_name(cx, &what, &Spanned::new(rb.from.span(), parent), &name_refs)?;
        let after_what = format!("{}.after", key(&names[i]));
        let state = state_after(cx, &after_what, p, &built[p], rb.after.as_ref())?;
        built[i].parent = Some(state);
        edges.insert((p, i));
    }
    let ids: Vec<(String, std::ops::Range<usize>)> = (0..built.len())
        .map(|i| (format!("builder.{}", names[i]), raws[i].span()))
        .collect();
    let mut deps: BTreeMap<String, Vec<(String, std::ops::Range<usize>)>> =
        ids.iter().map(|(id, _)| (id.clone(), Vec::new())).collect();
    for (from, to) in &edges {
        if let Some(d) = deps.get_mut(&ids[*to].0) {
            d.push((ids[*from].0.clone(), ids[*to].1.clone()));
        }
    }
    let order = order_ids(cx, &ids, &deps)?;
    for (from, to) in &edges {
        built[*to].deps.push(*from);
    }
    Ok(order
        .iter()
        .filter_map(|id| ids.iter().position(|(i, _)| i == id))
        .collect())
}

/// The builders in `order`, their parents' indices renumbered.
pub(super) fn reorder(built: Vec<Builder>, order: &[usize]) -> Vec<Builder> {
    let new_index = |old: usize| order.iter().position(|&o| o == old).unwrap_or(old);
    let mut slots: Vec<Option<Builder>> = built.into_iter().map(Some).collect();
    order
        .iter()
        .filter_map(|&o| slots[o].take())
        .map(|mut b| {
            if let Some(p) = b.parent.as_mut() {
                p.builder = new_index(p.builder);
            }
            b.deps = b.deps.iter().map(|&d| new_index(d)).collect();
            b.deps.sort();
            b.deps.dedup();
            b
        })
        .collect()
}

/// `image.NAME.builder` (and `after`): the state the image is made of.
/// Its first base must be an image or scratch: a host or directory
/// builder has no layers to start an image from.
pub(super) fn image_state(
    cx: &Ctx,
    name: &str,
    r: &RawImage,
    plan: &super::Plan,
) -> Result<Option<BuilderState>, SpecError> {
    let Some(b) = &r.builder else {
        if let Some(a) = &r.after {
            return Err(cx.err(
                a.span(),
                format!("image.{name}.after: only an image of a builder (builder = \"NAME\") has an `after` rule"),
            ));
        }
        return Ok(None);
    };
    let names: Vec<&str> = plan.builders.iter().map(|b| b.name.as_str()).collect();
    let i = by_name(cx, &format!("image.{name}.builder"), b, &names)?;
    let what = format!("image.{name}.after");
    let state = state_after(cx, &what, i, &plan.builders[i], r.after.as_ref())?;
    let root = plan.root_from(i);
    if root == "host" || root.starts_with("rootfs:") {
        return Err(cx.err(
            b.span(),
            format!("image.{name}.builder = {:?}: that builder starts from {root}, which is not an image; an image of a builder needs its base to be an image or scratch", b.get_ref()),
        ));
    }
    Ok(Some(state))
}
