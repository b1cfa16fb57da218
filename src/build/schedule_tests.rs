//! The scheduling rules, against a cache held in memory.

use super::*;
use crate::build::stepcache::RecordKind;
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::media;
use std::cell::RefCell;
use std::path::Path;

/// A step cache in memory: the keys it holds, the keys a probe sees
/// (a shared cache may list what it then fails to deliver), the parts
/// steps were last built with, and the lookups made.
#[derive(Default)]
struct Cache {
    held: BTreeSet<Digest>,
    listed: BTreeSet<Digest>,
    last: BTreeMap<String, BTreeMap<String, String>>,
    sources: BTreeMap<String, SourceContent>,
    looked_up: RefCell<Vec<Digest>>,
}

impl Lookup for Cache {
    fn lookup(&self, key: &StepKey) -> Option<Record> {
        self.looked_up.borrow_mut().push(key.key.clone());
        self.held.contains(&key.key).then(|| record(&key.key))
    }
    fn probe(&self, key: &StepKey) -> bool {
        self.held.contains(&key.key) || self.listed.contains(&key.key)
    }
    fn last_parts(&self, step: &str) -> Option<BTreeMap<String, String>> {
        self.last.get(step).cloned()
    }
    fn source(&self, digest: &str) -> Option<SourceContent> {
        self.sources.get(digest).cloned()
    }
}

fn record(key: &Digest) -> Record {
    let desc = oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::ImageLayerGzip,
        1,
        media::to_spec_digest(key),
    );
    Record::new(RecordKind::Rule, "x", desc, key.to_string())
}

fn plan(text: &str) -> Plan {
    crate::project::parse(text, "shipyard.toml", Path::new("."), &[]).unwrap()
}

fn req() -> Request {
    Request {
        images: vec![],
        pods: vec![],
        read_cache: true,
        no_cache_rules: vec![],
        epoch: 0,
        compression: Compression::Gzip,
        level: None,
        sbom: false,
    }
}

fn facts(plan: &Plan) -> Facts {
    Facts {
        builders: plan
            .builders
            .iter()
            .map(|_| BuilderFacts {
                base: "base".into(),
                mode: "overlay".into(),
                ..BuilderFacts::default()
            })
            .collect(),
        runtime_bases: plan
            .images
            .iter()
            .map(|i| (i.name.clone(), "scratch".into()))
            .collect(),
    }
}

/// The schedule of a plan with one builder, as that builder's.
struct One {
    keys: Vec<StepKey>,
    steps: Vec<StepPlan>,
    last_needed: Option<usize>,
    images: Vec<ImagePlan>,
    all: Schedule,
}

impl One {
    fn of(all: Schedule) -> One {
        let b = all.builders[0].clone();
        One {
            keys: b.keys,
            steps: b.steps,
            last_needed: b.last_needed,
            images: all.images.clone(),
            all,
        }
    }
    fn used_keys(&self) -> Vec<Digest> {
        self.all.used_keys()
    }
    fn needs_builder(&self) -> bool {
        self.all.needs_builder()
    }
}

fn schedule(plan: &Plan, req: &Request, cache: &Cache) -> One {
    let sel = Selection::new(plan, req).unwrap();
    One::of(Schedule::new(plan, req, &facts(plan), &sel, cache).unwrap())
}

/// The keys of a plan's only builder.
fn keys_of(plan: &Plan, req: &Request, facts: &Facts) -> Vec<StepKey> {
    step_keys(plan, req, facts).unwrap().remove(0)
}

/// A cache holding every step and layer of `plan` as `req` builds it.
fn warm(plan: &Plan, req: &Request) -> Cache {
    let cold = schedule(plan, req, &Cache::default());
    let mut c = Cache::default();
    c.held.extend(cold.used_keys());
    c
}

/// `step word why` per step, as the build log says them.
fn said(plan: &Plan, s: &One) -> Vec<String> {
    plan.builders[0]
        .steps
        .iter()
        .zip(&s.steps)
        .map(|(step, p)| {
            format!("{} {} {}", step.id(), p.word(), p.why())
                .trim_end()
                .to_string()
        })
        .collect()
}

fn layer_why(s: &One) -> Vec<String> {
    s.images
        .iter()
        .flat_map(|i| &i.layers)
        .map(|l| match &l.status {
            Status::Hit(_) => "hit".to_string(),
            Status::Miss(why) => why.clone(),
        })
        .collect()
}

/// Three rules, a tapeout after each of the first and the last, and an
/// image per tapeout.
const THREE: &str = r#"
[build.a]
run = "a"
[tapeout.x]
after = ["build.a"]
include = ["/x"]
[build.b]
after = ["tapeout.x"]
run = "b"
[build.c]
after = ["build.b"]
run = "c"
[tapeout.y]
after = ["build.c"]
include = ["/y"]
[image.one]
tapeouts = ["x"]
[image.two]
tapeouts = ["y"]
"#;

#[test]
fn a_cold_build_runs_everything_and_says_so() {
    let p = plan(THREE);
    let s = schedule(&p, &req(), &Cache::default());
    let first = "not in the cache (first build of this step here)";
    assert_eq!(
        said(&p, &s),
        [
            format!("build.a run {first}"),
            format!("tapeout.x run {first}"),
            "build.b run an earlier rule ran".to_string(),
            "build.c run an earlier rule ran".to_string(),
            format!("tapeout.y run {first}"),
        ]
    );
    assert_eq!(s.last_needed, Some(4));
    assert_eq!(layer_why(&s), [first, first]);
}

#[test]
fn a_warm_build_touches_no_step() {
    let p = plan(THREE);
    let cache = warm(&p, &req());
    let s = schedule(&p, &req(), &cache);
    assert_eq!(s.last_needed, None);
    assert!(!s.needs_builder());
    assert_eq!(
        said(&p, &s),
        [
            "build.a cached",
            "tapeout.x not needed the images that use it are cached",
            "build.b cached",
            "build.c cached",
            "tapeout.y not needed the images that use it are cached",
        ]
    );
    assert_eq!(layer_why(&s), ["hit", "hit"]);
    // Rules beyond the builder's reach are probed, never fetched.
    let rule_keys: Vec<&Digest> = [0, 2, 3].iter().map(|&i| &s.keys[i].key).collect();
    assert!(cache
        .looked_up
        .borrow()
        .iter()
        .all(|k| !rule_keys.contains(&k)));
}

#[test]
fn a_miss_runs_every_rule_after_it_and_restores_those_before() {
    let p = plan(THREE);
    let mut cache = warm(&p, &req());
    let s0 = schedule(&p, &req(), &cache);
    // build.b is gone from the cache: the builder goes as far as it, and
    // no further (build.c is cached, and no image needs what follows).
    cache.held.remove(&s0.keys[2].key);
    let s = schedule(&p, &req(), &cache);
    assert_eq!(s.last_needed, Some(2));
    assert!(matches!(s.steps[0], StepPlan::Restore(_)));
    assert!(matches!(s.steps[2], StepPlan::Run(ref w) if w.starts_with("not in the cache")));
    assert!(matches!(s.steps[3], StepPlan::Cached));
    // Image two's layer and tapeout.y are gone too: build.c, which the
    // cache holds, runs again on top of the new build.b.
    cache.held.remove(&s0.keys[4].key);
    cache.held.remove(&s0.images[1].layers[0].key.key);
    let s = schedule(&p, &req(), &cache);
    assert_eq!(s.last_needed, Some(4));
    let first = "not in the cache (first build of this step here)";
    assert_eq!(
        said(&p, &s),
        [
            "build.a cached".to_string(),
            "tapeout.x not needed the images that use it are cached".to_string(),
            format!("build.b run {first}"),
            "build.c run an earlier rule ran".to_string(),
            format!("tapeout.y run {first}"),
        ]
    );
}

#[test]
fn a_cached_tapeout_after_a_rule_that_ran_is_made_again() {
    let p = plan(THREE);
    let mut cache = warm(&p, &req());
    let s0 = schedule(&p, &req(), &cache);
    // Image one's layer, build.a and build.c are gone: tapeout.x is
    // needed and cached, but build.a runs before it.
    cache.held.remove(&s0.images[0].layers[0].key.key);
    cache.held.remove(&s0.keys[0].key);
    cache.held.remove(&s0.keys[3].key);
    let s = schedule(&p, &req(), &cache);
    assert_eq!(s.last_needed, Some(3));
    assert!(matches!(s.steps[1], StepPlan::Run(ref w) if w == "an earlier rule ran"));
    // With build.a back, tapeout.x is restored, not run.
    cache.held.insert(s0.keys[0].key.clone());
    let s = schedule(&p, &req(), &cache);
    assert!(matches!(s.steps[1], StepPlan::RestoreSelection(_)));
    assert!(matches!(s.steps[2], StepPlan::Restore(_)));
    assert!(matches!(s.steps[3], StepPlan::Run(_)));
}

#[test]
fn no_cache_rule_forces_that_rule_and_everything_after_it() {
    let p = plan(THREE);
    let cache = warm(&p, &req());
    let mut r = req();
    r.no_cache_rules = vec!["build.b".into()];
    let s = schedule(&p, &r, &cache);
    let rebuilt = "build.b is rebuilt (--no-cache-rule)";
    assert_eq!(
        said(&p, &s),
        [
            "build.a cached".to_string(),
            "tapeout.x not needed the images that use it are cached".to_string(),
            "build.b run --no-cache-rule".to_string(),
            format!("build.c run {rebuilt}"),
            format!("tapeout.y run {rebuilt}"),
        ]
    );
    // build.a is restored under the rules that run; image one's layer,
    // made before build.b, is still a hit.
    assert!(matches!(s.steps[0], StepPlan::Restore(_)));
    assert_eq!(layer_why(&s), ["hit", rebuilt]);
}

#[test]
fn no_cache_and_a_writable_source_force_every_step() {
    let p = plan(THREE);
    let cache = warm(&p, &req());
    let mut r = req();
    r.read_cache = false;
    let s = schedule(&p, &r, &cache);
    assert!(s.steps.iter().all(|st| st.why() == "--no-cache"));
    assert_eq!(layer_why(&s), ["--no-cache", "--no-cache"]);

    let text = format!(
        "[builder]\nsources = {{ \"/src\" = {{ path = \".\", writable = true }} }}\n{THREE}"
    );
    let p = plan(&text);
    let cache = warm(&p, &req());
    let s = schedule(&p, &req(), &cache);
    let why = "source /src is mounted writable, and what rules write there is not cached";
    assert!(
        s.steps.iter().all(|st| st.why() == why),
        "{:?}",
        said(&p, &s)
    );
}

#[test]
fn image_selection_limits_how_far_the_builder_goes() {
    let p = plan(THREE);
    // Every rule is cached, no tapeout or layer is.
    let cold = schedule(&p, &req(), &Cache::default());
    let mut cache = Cache::default();
    cache
        .held
        .extend([0, 2, 3].iter().map(|&i| cold.keys[i].key.clone()));
    let mut r = req();
    r.images = vec!["one".into()];
    let s = schedule(&p, &r, &cache);
    assert_eq!(s.images.len(), 1);
    assert_eq!(s.images[0].index, 0);
    // Up to tapeout.x only: build.b and build.c are left in the cache.
    assert_eq!(s.last_needed, Some(1));
    assert!(matches!(s.steps[0], StepPlan::Restore(_)));
    assert!(matches!(s.steps[2], StepPlan::Cached));
    assert!(matches!(s.steps[4], StepPlan::NotNeeded));
    // Both images: all the way.
    let s = schedule(&p, &req(), &cache);
    assert_eq!(s.last_needed, Some(4));
    assert_eq!(s.images.len(), 2);
}

#[test]
fn a_rule_the_cache_lacks_is_reached_even_when_no_image_needs_it() {
    // A test rule after the last tapeout still gates the build.
    let text = format!("{THREE}\n[build.test]\nafter = [\"tapeout.y\"]\nrun = \"t\"\n");
    let p = plan(&text);
    let mut cache = warm(&p, &req());
    let keys = schedule(&p, &req(), &cache).keys;
    cache.held.remove(&keys[5].key);
    let s = schedule(&p, &req(), &cache);
    assert_eq!(s.last_needed, Some(5));
    assert!(matches!(s.steps[5], StepPlan::Run(_)));
    // Listed in a shared cache is enough not to go there.
    cache.listed.insert(keys[5].key.clone());
    assert_eq!(schedule(&p, &req(), &cache).last_needed, None);
}

const POD: &str = r#"
[build.a]
run = "a"
[tapeout.web]
after = ["build.a"]
include = ["/web"]
[tapeout.data]
after = ["build.a"]
include = ["/data"]
[tapeout.other]
after = ["build.a"]
include = ["/other"]
[image.web]
tapeouts = ["web"]
[image.other]
tapeouts = ["other"]
[pod.shop]
version = "1"
[pod.shop.containers.web]
image = "web"
[pod.shop.volumes.data]
tapeout = "data"
"#;

#[test]
fn a_pod_selects_its_images_and_needs_its_volume_tapeouts() {
    let p = plan(POD);
    let mut r = req();
    r.pods = vec!["shop".into()];
    let cache = warm(&p, &req());
    let s = schedule(&p, &r, &cache);
    assert_eq!(s.all.pods, [0]);
    let names: Vec<&str> = s
        .images
        .iter()
        .map(|i| p.images[i.index].name.as_str())
        .collect();
    assert_eq!(names, ["web"]);
    // The volume's tapeout is restored even though every layer hits.
    assert!(matches!(s.steps[2], StepPlan::RestoreSelection(_)));
    assert!(matches!(s.steps[1], StepPlan::NotNeeded));
    // --image alone makes no pod.
    let mut r = req();
    r.images = vec!["other".into()];
    let s = schedule(&p, &r, &cache);
    assert!(s.all.pods.is_empty());
    assert!(matches!(s.steps[2], StepPlan::NotNeeded));
}

#[test]
fn names_the_plan_lacks_are_refused_with_what_it_has() {
    let p = plan(POD);
    let err = |f: &dyn Fn(&mut Request)| {
        let mut r = req();
        f(&mut r);
        Selection::new(&p, &r).unwrap_err().to_string()
    };
    assert_eq!(
        err(&|r| r.pods = vec!["nope".into()]),
        "--pod nope: no such pod in the spec (pods: shop)"
    );
    assert_eq!(
        err(&|r| r.images = vec!["nope".into()]),
        "--image nope: no such image in the spec (images: web, other)"
    );
    assert_eq!(
        err(&|r| r.no_cache_rules = vec!["build.b".into()]),
        "--no-cache-rule build.b: no such rule in the spec \
         (rules: build.a, tapeout.web, tapeout.data, tapeout.other)"
    );
    let none = plan(THREE);
    let mut r = req();
    r.pods = vec!["shop".into()];
    assert_eq!(
        Selection::new(&none, &r).unwrap_err().to_string(),
        "--pod shop: no such pod in the spec (pods: none)"
    );
}

#[test]
fn layer_per_tapeout_makes_a_layer_per_tapeout() {
    let text = THREE.replace(
        "[image.two]\ntapeouts = [\"y\"]",
        "[image.two]\ntapeouts = [\"x\", \"y\"]\nlayer-per-tapeout = true",
    );
    let p = plan(&text);
    let s = schedule(&p, &req(), &Cache::default());
    let groups: Vec<Vec<String>> = s.images[1]
        .layers
        .iter()
        .map(|l| l.tapeouts.clone())
        .collect();
    assert_eq!(groups, [vec!["x".to_string()], vec!["y".to_string()]]);
    // One layer holding the same tapeout on the same base as another
    // image's has the same key (the cache serves both).
    assert_eq!(s.images[0].layers[0].key, s.images[1].layers[0].key);
    // --no-cache-rule on a tapeout forces the layers that hold it.
    let mut r = req();
    r.no_cache_rules = vec!["tapeout.y".into()];
    let cache = warm(&p, &req());
    let s = schedule(&p, &r, &cache);
    assert_eq!(layer_why(&s), ["hit", "hit", "--no-cache-rule"]);
}

#[test]
fn in_place_rules_always_run() {
    let p = plan(THREE);
    let mut f = facts(&p);
    f.builders[0].mode = "none".into();
    let cache = Cache::default();
    let sel = Selection::new(&p, &req()).unwrap();
    let mut c = Cache::default();
    c.held.extend(
        Schedule::new(&p, &req(), &f, &sel, &cache)
            .unwrap()
            .used_keys(),
    );
    let s = One::of(Schedule::new(&p, &req(), &f, &sel, &c).unwrap());
    assert_eq!(s.last_needed, Some(3));
    for i in [0, 2, 3] {
        assert_eq!(s.steps[i].why(), NOT_CACHED_IN_PLACE);
    }
}

#[test]
fn a_rule_key_chains_the_rules_before_it() {
    let p = plan(THREE);
    let before = keys_of(&p, &req(), &facts(&p));
    let changed = plan(&THREE.replace("run = \"b\"", "run = \"b2\""));
    let after = keys_of(&changed, &req(), &facts(&p));
    let same: Vec<bool> = before
        .iter()
        .zip(&after)
        .map(|(a, b)| a.key == b.key)
        .collect();
    // build.a and tapeout.x come first; everything after build.b changes.
    assert_eq!(same, [true, true, false, false, false]);
    // The epoch is in every rule's environment.
    let mut r = req();
    r.epoch = 1;
    let later = keys_of(&p, &r, &facts(&p));
    assert_ne!(later[0].key, before[0].key);
    // A single-id map is part of the key only when it is one.
    let mut f = facts(&p);
    f.builders[0].single_ids = true;
    let single = keys_of(&p, &req(), &f);
    assert_eq!(single[0].parts["ids"], "single");
    assert!(!before[0].parts.contains_key("ids"));
}

#[test]
fn a_miss_says_which_input_changed() {
    let p = plan(THREE);
    let keys = keys_of(&p, &req(), &facts(&p));
    let mut cache = Cache::default();
    let why = |c: &Cache| why_missed(c, "build.a", &keys[0]);
    assert_eq!(
        why(&cache),
        "not in the cache (first build of this step here)"
    );
    cache.last.insert("build.a".into(), keys[0].parts.clone());
    assert_eq!(why(&cache), "not in the cache (pruned, or never stored)");
    let mut old = keys[0].parts.clone();
    old.insert("definition".into(), "other".into());
    old.insert("base".into(), "other".into());
    old.insert("source:/gone".into(), "d".into());
    cache.last.insert("build.a".into(), old);
    assert_eq!(
        why(&cache),
        "the builder base changed; its definition changed; source /gone was removed"
    );
}

#[test]
fn a_source_change_names_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = ["a", "b", "c", "d", "e", "f", "g"];
    for f in files {
        std::fs::write(dir.path().join(f), "1").unwrap();
    }
    let old = key::source_content(dir.path(), None).unwrap();
    for f in files {
        std::fs::write(dir.path().join(f), "2").unwrap();
    }
    let new = key::source_content(dir.path(), None).unwrap();
    let mut cache = Cache::default();
    cache.sources.insert("old".into(), old);
    cache.sources.insert("new".into(), new);
    let key = StepKey::new([("source:/src".to_string(), "new".to_string())].into());
    cache.last.insert(
        "build.a".into(),
        [("source:/src".to_string(), "old".to_string())].into(),
    );
    assert_eq!(
        why_missed(&cache, "build.a", &key),
        "source /src changed: /a, /b, /c, /d, /e and 2 more"
    );
    // Without the listings, only that it changed.
    cache.sources.clear();
    assert_eq!(why_missed(&cache, "build.a", &key), "source /src changed");
}

const MULTI: &str = r#"
[builder.build]
from = "scratch"
[builder.final]
from = "scratch"
[builder.test]
from = "builder:build"
after = "build.compile"
[build.compile]
builder = "build"
run = "compile"
[build.more]
builder = "build"
after = ["build.compile"]
run = "more"
[tapeout.app]
after = ["build.more"]
include = ["/out/**"]
[build.install]
builder = "final"
mounts = { "/in" = "tapeout.app" }
run = "install"
[build.check]
builder = "test"
run = "check"
[image.final]
builder = "final"
tapeouts = ["app"]
"#;

fn multi(text: &str, req: &Request, cache: &Cache) -> Schedule {
    let p = plan(text);
    let sel = Selection::new(&p, req).unwrap();
    Schedule::new(&p, req, &facts(&p), &sel, cache).unwrap()
}

#[test]
fn a_builder_from_another_starts_from_that_rules_key() {
    let p = plan(MULTI);
    let keys = step_keys(&p, &req(), &facts(&p)).unwrap();
    // test starts after build.compile: its base is that rule's key.
    assert_eq!(keys[2][0].parts["base"], keys[0][0].key.to_string());
    // Changing a rule after that point leaves test's keys alone; changing
    // build.compile changes them.
    let other = plan(&MULTI.replace("run = \"more\"", "run = \"more2\""));
    let k2 = step_keys(&other, &req(), &facts(&other)).unwrap();
    assert_eq!(k2[2][0].key, keys[2][0].key);
    let other = plan(&MULTI.replace("run = \"compile\"", "run = \"compile2\""));
    let k3 = step_keys(&other, &req(), &facts(&other)).unwrap();
    assert_ne!(k3[2][0].key, keys[2][0].key);
}

#[test]
fn a_rule_that_mounts_a_tapeout_holds_its_key() {
    let p = plan(MULTI);
    let keys = step_keys(&p, &req(), &facts(&p)).unwrap();
    assert_eq!(keys[1][0].parts["tapeout:/in"], keys[0][2].key.to_string());
    // A change upstream of the tapeout reaches the rule that reads it.
    let other = plan(&MULTI.replace("run = \"more\"", "run = \"more2\""));
    let k2 = step_keys(&other, &req(), &facts(&other)).unwrap();
    assert_ne!(k2[1][0].key, keys[1][0].key);
}

#[test]
fn an_image_of_a_builder_has_a_layer_per_rule_then_its_tapeouts() {
    let s = multi(MULTI, &req(), &Cache::default());
    let layers = &s.images[0].layers;
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0].rule, Some((1, 0)));
    assert_eq!(layers[1].tapeouts, ["app"]);
    // The tapeouts' layer is made against the rules' layer under it.
    assert!(layers[1].key.parts["runtime-base"].contains(&layers[0].key.key.to_string()));
    // Cold: every builder runs; the mounted tapeout is made.
    assert!(s.builders.iter().all(|b| b.last_needed.is_some()));
    assert!(matches!(s.builders[0].steps[2], StepPlan::Run(_)));
}

#[test]
fn a_mounted_tapeout_is_needed_only_while_its_reader_may_run() {
    let r = req();
    let cold = multi(MULTI, &r, &Cache::default());
    let mut cache = Cache::default();
    cache.held.extend(cold.used_keys());
    // Everything cached: no builder needed, the tapeout left alone.
    let s = multi(MULTI, &r, &cache);
    assert!(!s.needs_builder());
    assert!(matches!(s.builders[0].steps[2], StepPlan::NotNeeded));
    // The reading rule misses (and so does the image's layer of it): the
    // tapeout is restored for it to read.
    cache.held.remove(&cold.builders[1].keys[0].key);
    cache.held.remove(&cold.images[0].layers[0].key.key);
    let s = multi(MULTI, &r, &cache);
    assert!(matches!(
        s.builders[0].steps[2],
        StepPlan::RestoreSelection(_)
    ));
    assert!(matches!(s.builders[1].steps[0], StepPlan::Run(_)));
    // Builders that did not change stay cached.
    assert!(s.builders[2].last_needed.is_none());
}
