"""One remediation round: from an audit's flags to actions, and actions to files.

    plan_round(...)          the audit's flags -> actions (a pure function of the audit and state)
    apply_removals(...)      removes files from the working tree

Actions are dicts: {"op": "remove" | "replace", "key", "class", "reason", "score", "p_value",
"matcher", "nearest", "round"}, plus for "replace" the slot (the generate record's path), the
class index, the image index and the attempt whose seeds make the replacement. The replacement
of slot S at attempt a is `<S without suffix>-r<a>.png`, rendered from
    seed       = derive_seed(base, class, index, "retry", a)
    noise seed = derive_seed(base, class, index, "noise", "retry", a)   (noise_mode random)
the same retry seeds `generate --align` uses, so a release and its rebuild agree (synthgen.rerender
renders them).
"""

from __future__ import annotations

from pathlib import Path

from synthgen.contract import identity_of


def collisions(report: dict) -> list[dict]:
    """Colliding synthetic identity pairs of every matcher, best first (ties by names)."""
    pairs = []
    ms = report.get("matchers") or [report]
    for m in ms if isinstance(ms, list) else []:
        if not isinstance(m, dict):
            continue
        c = (m.get("collisions") or {}).get("pairs") if isinstance(m.get("collisions"), dict) else None
        name = str((m.get("matcher") or {}).get("name", "")) if isinstance(m.get("matcher"), dict) else ""
        for p in c if isinstance(c, list) else []:
            try:
                score = float(p["score"])
            except (TypeError, ValueError, KeyError):
                continue
            if str(p["a"]) != str(p["b"]) and score == score:  # a pair of two identities, a real score
                pairs.append({"a": str(p["a"]), "b": str(p["b"]), "score": score, "matcher": name})
    return sorted(pairs, key=lambda p: (-p["score"], p["a"], p["b"]))


def plan_round(items: dict, rows: list[dict], report: dict, policy: str, keep_foreign: bool, rnd: int,
               deferred=frozenset()) -> list[dict]:
    """Actions for round `rnd` from the previous audit. `items`: key -> {"slot", "class", "index",
    "attempt"} of the current working set (slot None: not made by the generator); `deferred`: the
    classes an earlier round deferred (their replace actions carried "defers")."""
    present = {identity_of(k) for k in items}
    gone: dict[str, dict] = {}
    best: dict[tuple, dict] = {}
    for r in rows:  # one row per flagged item: the matcher with the smallest p-value
        k = (r["kind"], r["synthetic"])
        if k not in best or (r["p_value"], r["matcher"]) < (best[k]["p_value"], best[k]["matcher"]):
            best[k] = r
    # A class whose template is flagged while a minority of its images are flagged too: those images
    # can be what pulls the template (one leaked image of five did, in the release tests). With
    # re-rendering they are replaced first and the next audit round decides on the class, once (a
    # class deferred before is not deferred again: `deferred`, kept in the release's state, not
    # inferred from attempts, which generate --align retries and quality filters raise too); a class
    # with half or more of its images flagged is the leak itself and goes now (so does any, with drop).
    size, hit = {}, {}
    for k in items:
        size[identity_of(k)] = size.get(identity_of(k), 0) + 1
    for kind, k in best:
        if kind == "image" and k in items:
            hit[identity_of(k)] = hit.get(identity_of(k), 0) + 1
    flagged_ids = {name for kind, name in best if kind == "identity"}
    pulled = {c for c, n in hit.items() if 2 * n < size[c] and c not in deferred and c in flagged_ids} \
        if policy != "drop" else set()
    for (kind, name), r in sorted(best.items()):
        if kind == "identity" and name in present and name not in pulled:
            gone[name] = {"reason": f"identity flagged: its template matches authentic identity {r['authentic']}",
                          "score": r["score"], "p_value": r["p_value"], "matcher": r["matcher"], "nearest": r["authentic"]}
    for p in collisions(report):
        a, b = p["a"], p["b"]
        if a in gone or b in gone or a not in present or b not in present:
            continue
        gone[b] = {"reason": f"identity collision: synthetic identities {a} and {b} look like one person "
                             f"(template score {p['score']:.4f}); {b} removed",
                   "score": p["score"], "p_value": None, "matcher": p["matcher"], "nearest": a}
    acts = []
    for key in sorted(items):
        it = items[key]
        cls = identity_of(key)
        base = {"key": key, "class": cls, "round": rnd, "score": None, "p_value": None, "matcher": None, "nearest": None}
        if cls in gone:
            acts.append({**base, **gone[cls], "op": "remove"})
            continue
        r = best.get(("image", key))
        if r is not None:
            flag = {"score": r["score"], "p_value": r["p_value"], "matcher": r["matcher"], "nearest": r["authentic"]}
            if it["slot"] is None:
                acts.append({**base, **flag, "op": "remove",
                             "reason": "flagged, and not made by the generator (no generation record)"})
            elif policy == "drop":
                acts.append({**base, **flag, "op": "remove", "reason": f"flagged: matches authentic image {r['authentic']}"})
            elif it["class"] is None:
                acts.append({**base, **flag, "op": "remove", "reason": f"flagged: matches authentic image {r['authentic']}"
                             " (views of an unconditional instance are dropped, not re-rendered)"})
            else:
                acts.append({**base, **flag, "op": "replace", "slot": it["slot"], "cls": it["class"],
                             "index": it["index"], "attempt": it["attempt"] + 1,
                             **({"defers": cls} if cls in pulled else {}),
                             "reason": f"flagged: matches authentic image {r['authentic']}; re-rendered from the next "
                                       "retry seed"})
            continue
        if it["slot"] is None and not keep_foreign:
            acts.append({**base, "op": "remove", "reason": "not made by the generator (no generation record): it "
                         "cannot be vouched for or rebuilt"})
    return acts


def apply_removals(tree: Path, acts: list[dict], items: dict) -> None:
    for a in acts:
        (tree / a["key"]).unlink(missing_ok=True)
        items.pop(a["key"], None)
