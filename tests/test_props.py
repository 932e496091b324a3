"""Property-based tests where the input space is large: the summary-line rule, ids, and YAML
round-trips of state files. hypothesis shrinks any counterexample to a minimal one."""
from __future__ import annotations

import math
import string

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runner.files.metrics import parse_summary, summary_line
from runner.files.yamlio import dump_yaml, parse_yaml
from runner.state import ids
from runner.validation import schema

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_./-]{0,15}", fullmatch=True)
values = st.floats(allow_nan=False, allow_infinity=False, width=64)
noise = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85"
                              "\u2028\u2029"), max_size=40).filter(lambda s: s.strip() and summary_line(s) is None)
blank = st.sampled_from(["", " ", "\t", "   "])


def render(name: str, value: float) -> str:
    return f"{name}: {value!r}"


@st.composite
def logs(draw):
    """(log text, the final block's summary): noise and fake summary blocks, a noise line, the real block."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            lines += draw(st.lists(noise, min_size=1, max_size=3))
        else:
            lines += [render(n, v) for n, v in draw(st.lists(st.tuples(names, values), min_size=1, max_size=3))]
    lines.append(draw(noise))                                   # what ends the fake blocks
    final = draw(st.lists(st.tuples(names, values), min_size=1, max_size=5))
    for name, value in final:
        lines += draw(st.lists(blank, max_size=1)) + [render(name, value)]
    lines += draw(st.lists(blank, max_size=3))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return newline.join(lines), dict(final)


@PROPS
@given(logs())
def test_the_final_block_always_wins(case):
    text, final = case
    assert parse_summary(text) == final


@PROPS
@given(logs(), names, values)
def test_a_fake_line_before_the_final_block_never_beats_it(case, metric, fake):
    text, final = case
    summary = parse_summary(f"{render(metric, fake)}\nwarming up\n{text}")
    assert summary == final
    if metric not in final:
        assert metric not in summary                            # no stale value stands in for a missing one


@PROPS
@given(st.lists(st.one_of(noise, st.tuples(names, values).map(lambda p: render(*p))), max_size=12), noise)
def test_output_ending_in_noise_keeps_the_last_value_of_each_name(lines, ending):
    expected: dict[str, float] = {}
    for line in lines:
        pair = summary_line(line)
        if pair:
            expected.pop(pair[0], None)
            expected[pair[0]] = pair[1]
    assert parse_summary("\n".join([*lines, ending])) == expected


@PROPS
@given(names, values, st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " ", "  "]))
def test_a_summary_line_reads_back_its_name_and_value(name, value, pad, gap):
    assert summary_line(f"{pad}{name}{gap}:{gap}{value!r}{pad}") == (name, value)


# -- ids ---------------------------------------------------------------------------------------------
prefixes = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)


@PROPS
@given(prefixes, st.integers(1, 30))
def test_new_ids_are_safe_unique_and_keep_their_prefix(prefix, n):
    made = [ids.new_id(prefix) for _ in range(n)]
    assert len(set(made)) == n
    for value in made:
        assert ids.is_safe_id(value) and value.startswith(f"{prefix}-")


@PROPS
@given(prefixes, st.sets(st.text(string.ascii_lowercase, min_size=1, max_size=3), max_size=5))
def test_new_id_never_returns_a_taken_one(prefix, taken_suffixes):
    seen = []

    def taken(candidate):
        seen.append(candidate)
        return len(seen) <= len(taken_suffixes)                 # the first few candidates are taken
    value = ids.new_id(prefix, taken)
    assert value == seen[-1] and seen.count(value) == 1


safe = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}(\.[A-Za-z0-9_-]{1,8}){0,3}", fullmatch=True)


@PROPS
@given(safe)
def test_safe_ids_are_accepted(value):
    assert ids.is_safe_id(value)


@PROPS
@given(st.text(max_size=120))
def test_unsafe_strings_are_refused(value):
    unsafe = (not value or len(value) > ids.MAX_ID_LENGTH or value[0] in "._-" or value.endswith(".")
              or ".." in value or any(c not in string.ascii_letters + string.digits + "._-" for c in value))
    assume(unsafe)
    assert not ids.is_safe_id(value)


@PROPS
@given(safe, st.sampled_from(["/", "..", " ", "\\", "\n", "\x00", "é"]), st.booleans())
def test_a_path_character_anywhere_makes_an_id_unsafe(value, bad, before):
    assert not ids.is_safe_id(bad + value if before else value + bad)


@PROPS
@given(st.one_of(safe, safe.map(lambda s: s + "\n"), st.text(max_size=30)))
def test_the_schemas_and_is_safe_id_agree_on_every_id(value):
    """The id pattern in the schemas is the rule is_safe_id applies, trailing newline included,
    and the compiled gate gives jsonschema's verdict on it."""
    doc = {"id": value, "title": "t", "status": "proposed", "created": "2026-11-21T08:30:00Z",
           "change": {"params": {"X": 1}}}
    verdict = schema.gate("hypothesis")(doc)
    assert verdict == schema.validator("hypothesis").is_valid(doc) == ids.is_safe_id(value)
    assert (schema.check("hypothesis", doc, "h.yaml", {"id": 1}) == []) is verdict


# -- YAML round-trips of schema-valid state files -------------------------------------------------------
texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60)
stamps = st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"))
param_values = st.one_of(st.integers(-10**12, 10**12), values, st.booleans(), texts)
changes = st.one_of(
    st.fixed_dictionaries({"params": st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True),
                                                     param_values, min_size=1, max_size=4)}),
    st.fixed_dictionaries({"instructions": texts}))


@st.composite
def hypotheses(draw):
    doc = {"id": draw(safe), "title": draw(texts), "status": draw(st.sampled_from(
        ["proposed", "accepted", "rejected", "duplicate"])), "author": draw(texts), "created": draw(stamps),
        "change": draw(changes)}
    if draw(st.booleans()):
        doc["review"] = {"by": draw(texts), "at": draw(stamps), "reason": draw(texts)}
    if draw(st.booleans()):
        doc["tags"] = draw(st.lists(texts, max_size=3))
    return doc


@st.composite
def experiments(draw):
    status = draw(st.sampled_from(["queued", "assigned", "ready", "running", "finished", "failed", "cancelled"]))
    created = draw(stamps)
    doc = {"id": draw(safe), "hypothesis": draw(safe), "kind": "experiment", "status": status,
           "base": draw(st.from_regex(r"[0-9a-f]{40}", fullmatch=True)), "priority": draw(st.integers(-100, 100)),
           "wave": draw(st.integers(0, 50)), "change": draw(changes), "created": created,
           "history": [{"status": "queued", "at": created, "by": "planner"}]}
    if status != "queued":
        doc["history"].append({"status": status, "at": draw(stamps), "by": "runner", "note": draw(texts)})
    return doc


def assert_round_trip(kind: str, doc: dict) -> None:
    assume(not schema.check(kind, doc, f"{kind}.yaml", {}))
    data, lines = parse_yaml(dump_yaml(doc), f"{kind}.yaml")
    assert data == doc
    assert lines["id"] >= 1                                     # every field still names its line


@PROPS
@given(hypotheses())
def test_hypothesis_files_read_back_as_written(doc):
    assert_round_trip("hypothesis", doc)


@PROPS
@given(experiments())
def test_queue_entries_read_back_as_written(doc):
    assert_round_trip("experiment", doc)


def test_floats_that_yaml_could_misread_survive():
    for value in (1e16, 1e-7, -0.0, 123456789.123456789, 5e-324, 1.7976931348623157e308):
        doc = {"id": "h-1", "title": "t", "status": "proposed", "created": "2026-11-21T08:30:00Z",
               "change": {"params": {"X": value}}}
        back = parse_yaml(dump_yaml(doc), "h.yaml")[0]["change"]["params"]["X"]
        assert back == value and math.copysign(1, back) == math.copysign(1, value)
