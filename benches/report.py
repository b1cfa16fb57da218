"""Turns benches/compare.sh's results.tsv into the ratio table of
docs/benchmarks.md: medians of each workload, shipyard / peer."""
import statistics
import sys
from collections import defaultdict

times = defaultdict(list)
rss = defaultdict(list)
sizes = {}
sizes_contents = None
buildkit_contents = None
shipyardf_contents = None
buildkit_skipped = False
for line in open(sys.argv[1]):
    name, vals = line.rstrip("\n").split("\t")
    a, b = vals.split()
    if name == "multistage.contents":
        sizes_contents = a
        continue
    if name == "multistage.buildkit.contents":
        buildkit_contents = a
        continue
    if name == "multistage.shipyardf.contents":
        shipyardf_contents = a
        continue
    if name == "grocker.buildkit":
        continue
    if name == "multistage.buildkit":
        buildkit_skipped = a == "skipped"
        continue
    if name.endswith(".sizes"):
        sizes[name[: -len(".sizes")]] = (int(a), int(b))
        continue
    times[name].append(float(a))
    rss[name].append(int(b))

def med(name):
    return statistics.median(times[name])

rows = []
for tree in ("big", "many"):
    for ours, peer, what, target in (
        # The ~500 MiB tree's target is 0.4x; the many-files tree has none.
        ("shipyard.diff", "buildah.commit", "diff + gzip layer vs `buildah commit` (gzip)", 0.4 if tree == "big" else None),
        ("shipyard.rediff", "umoci.repack", "re-diff, nothing changed, vs `umoci repack`", 0.2),
        ("shipyard.unpack", "umoci.unpack", "unpack the image (one gzip layer) vs `umoci unpack --rootless`", 0.35),
    ):
        a, b = f"{tree}.{ours}", f"{tree}.{peer}"
        if a in times and b in times:
            r = med(a) / med(b)
            rows.append((tree, what, med(a), med(b), r, target))

if "multistage.shipyard.build" in times:
    a, b = med("multistage.shipyard.build"), med("multistage.buildah.bud")
    rows.append(("multi-stage", "first build, `shipyard build` vs `buildah bud` (final contents: " + str(sizes_contents) + ")", a, b, a / b, 0.5))
if "multistage.shipyard.rebuild" in times:
    a, b = med("multistage.shipyard.rebuild"), med("multistage.buildah.rebuild")
    rows.append(("multi-stage", "rebuild, nothing changed, vs `buildah bud --layers`", a, b, a / b, 0.1))
if "multistage.shipyard.onechange" in times:
    a, b = med("multistage.shipyard.onechange"), med("multistage.buildah.onechange")
    rows.append(("multi-stage", "rebuild after one source file changed, vs `buildah bud --layers`", a, b, a / b, "below"))
# BuildKit (`DOCKER_BUILDKIT=1 docker build --network none`), the same
# workload's second peer; absent when there was no dockerd.
for ours, peer, what, target in (
    ("build", "build", f"first build vs BuildKit `docker build --no-cache` (final contents: {buildkit_contents})", 0.8),
    ("rebuild", "rebuild", "rebuild, nothing changed, vs BuildKit (warm cache)", 0.5),
    ("onechange", "onechange", "rebuild after one source file changed, vs BuildKit", None),
):
    a, b = f"multistage.shipyard.{ours}", f"multistage.buildkit.{peer}"
    if a in times and b in times:
        rows.append(("multi-stage", what, med(a), med(b), med(a) / med(b), target))
# The same workload as a Containerfile: `shipyard build -f` vs buildah bud
# and BuildKit building that file.
for ours, peer, what, target in (
    ("build", "buildah.bud", "Containerfile, first build, `shipyard build -f` vs `buildah bud`", None),
    ("build", "buildkit.build", f"Containerfile, first build, `shipyard build -f` vs BuildKit `--no-cache` (same tree as the spec's image: {shipyardf_contents})", 0.8),
    ("rebuild", "buildah.rebuild", "Containerfile, rebuild, nothing changed, vs `buildah bud --layers`", None),
    ("rebuild", "buildkit.rebuild", "Containerfile, rebuild, nothing changed, vs BuildKit", 0.5),
    ("onechange", "buildkit.onechange", "Containerfile, rebuild after one source file changed, vs BuildKit", None),
):
    a, b = f"multistage.shipyardf.{ours}", f"multistage.{peer}"
    if a in times and b in times:
        rows.append(("multi-stage", what, med(a), med(b), med(a) / med(b), target))
# The Grocker example on the real Debian base, vs BuildKit building the
# equivalent Dockerfile (absent without a dockerd or the base).
for ours, what, target in (
    ("onechange", "Grocker example: rebuild after one C source of the app changed, vs BuildKit", 0.5),
    ("rebuild", "Grocker example: rebuild, nothing changed, vs BuildKit", None),
):
    a, b = f"grocker.shipyard.{ours}", f"grocker.buildkit.{ours}"
    if a in times and b in times:
        rows.append(("grocker", what, med(a), med(b), med(a) / med(b), target))
# The two steps the change reruns (pip wheel with gcc, pip install), their
# own run time in each tool's log: a floor no overhead cut goes below.
a, b = "grocker.shipyard.onechange.steps", "grocker.buildkit.onechange.steps"
if a in times and b in times and med(b) > 0:
    rows.append(("grocker", "Grocker: the two rerun steps' own run time (each tool's log), vs BuildKit's", med(a), med(b), med(a) / med(b), None))
    if "grocker.buildkit.onechange" in times:
        floor = med(a) / med("grocker.buildkit.onechange")
        rows.append(("grocker", "Grocker: those steps alone, vs BuildKit's whole rebuild (the lowest ratio shipyard could reach)", med(a), med("grocker.buildkit.onechange"), floor, None))
for ours, peer, what, target in (
    ("push", "push", "push ~500 MiB, 4 layers, to an empty repository vs `skopeo copy --preserve-digests`", 1.0),
    ("repush", "repush", "re-push, every blob present, vs skopeo", 0.5),
    ("pull", "pull", "pull into an empty cache vs `skopeo copy` to an OCI layout", 1.0),
):
    a, b = f"registry.shipyard.{ours}", f"registry.skopeo.{peer}"
    if a in times and b in times:
        rows.append(("registry", what, med(a), med(b), med(a) / med(b), target))

print("| tree | workload | shipyard s | peer s | ratio | target | met |")
print("|---|---|---:|---:|---:|---:|---|")
for tree, what, a, b, r, target in rows:
    if target is None or target == "below":
        label = "(see below)" if target else "—"
        print(f"| {tree} | {what} | {a:.2f} | {b:.2f} | **{r:.2f}×** | {label} | |")
    else:
        print(f"| {tree} | {what} | {a:.2f} | {b:.2f} | **{r:.2f}×** | ≤ {target}× | {'yes' if r <= target else 'NO'} |")
if buildkit_skipped:
    print()
    print("BuildKit rows skipped: no dockerd (run benches/run as root).")
print()
absolute = []
if "multistage.shipyard.rebuild" in times:
    r = med("multistage.shipyard.rebuild")
    absolute.append(("rebuild, nothing changed", f"{r:.3f} s", "≤ 0.2 s", r <= 0.2))
if "multistage.shipyard.onechange" in times:
    over = [t - r for t, r in zip(times["multistage.shipyard.onechange"], times["multistage.shipyard.onechange.rule"])]
    o = statistics.median(over)
    rule = med("multistage.shipyard.onechange.rule")
    absolute.append(("one source file changed: total minus the rule's own run", f"{o:.3f} s (rule {rule:.2f} s)", "≤ 0.5 s", o <= 0.5))
if "cache.tapeout.alone" in times:
    t = med("cache.tapeout.alone")
    absolute.append(("tapeout of a 1 MiB change on a ~100k-file builder", f"{t:.3f} s", "≤ 0.1 s", t <= 0.1))
if "cache.bigbuild" in rss:
    m = max(rss["cache.bigbuild"]) / 1024
    absolute.append(("peak RSS of a build with a 2 GiB layer", f"{m:.1f} MiB ({med('cache.bigbuild'):.1f} s)", "≤ 100 MiB", m <= 100))
if absolute:
    print("| workload | shipyard | target | met |")
    print("|---|---:|---|---|")
    for what, v, target, ok in absolute:
        print(f"| {what} | {v} | {target} | {'yes' if ok else 'NO'} |")
print()
print("| tree | peak RSS of `shipyard diff` (gzip) | peer peak RSS | target |")
print("|---|---:|---:|---|")
if "registry.shipyard.repush" in times:
    r = med("registry.shipyard.repush")
    print(f"Re-push with every blob present: {r:.3f} s (target ≤ 0.2 s: {'yes' if r <= 0.2 else 'NO'})")
    print()
for tree in ("big", "many"):
    a, b = f"{tree}.shipyard.diff", f"{tree}.buildah.commit"
    if a in rss:
        ours = max(rss[a]) / 1024
        peer = max(rss[b]) / 1024 if b in rss else float("nan")
        print(f"| {tree} | {ours:.1f} MiB | {peer:.1f} MiB (buildah) | ≤ 100 MiB: {'yes' if ours <= 100 else 'NO'} |")

print()
print("| tree | shipyard layer | buildah layer | shipyard / buildah |")
print("|---|---:|---:|---:|")
for tree, (a, b) in sizes.items():
    print(f"| {tree} | {a / 2**20:.1f} MiB | {b / 2**20:.1f} MiB | {a / b:.3f} |")
