"""Payload shapes (pure): a payload from the sample never drifts; removing or retyping a field present in every
sample that the mapping uses always blocks; unused fields never block."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.flows.drift import build_snapshot, compare, json_type, shape_of

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3))
PAYLOAD = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]),
                          st.one_of(SCALARS, st.dictionaries(st.sampled_from(["x", "y"]), SCALARS, max_size=2)),
                          min_size=1, max_size=5)


@settings(max_examples=80, deadline=None)
@given(st.lists(PAYLOAD, min_size=1, max_size=6))
def test_a_sampled_payload_never_drifts(sample: list[dict[str, Any]]) -> None:
    snap = build_snapshot(sample)
    assert snap["samples"] == len(sample)
    for p in sample:
        res = compare("s", "e", snap, p, set("abcde"))
        assert not res.blocking and not res.new_fields and not res.retyped


@settings(max_examples=80, deadline=None)
@given(st.lists(PAYLOAD, min_size=1, max_size=6), st.data())
def test_removing_or_retyping_a_used_always_present_field_blocks(sample: list[dict[str, Any]], data: Any) -> None:
    snap = build_snapshot(sample)
    always = sorted(k for k, f in snap["fields"].items() if f["seen"] == len(sample) and "." not in k)
    if not always:
        return
    field = data.draw(st.sampled_from(always))
    payload = dict(data.draw(st.sampled_from(sample)))
    del payload[field]
    missing = compare("s", "e", snap, payload, {field})
    assert field in missing.missing and missing.blocking and missing.code in ("drift.field_missing",
                                                                              "drift.field_renamed")
    assert not compare("s", "e", snap, payload, set("abcde") - {field}).blocking  # nobody reads it: no pause
    seen = snap["fields"][field]["types"]
    other = next(v for v in ([1.5], 2.5, "t", True, None, {"z": 1}) if json_type(v) not in seen
                 and not (json_type(v) == "integer" and "number" in seen))
    retyped = compare("s", "e", snap, {**payload, field: other}, {field})
    assert retyped.retyped[field][1] == json_type(other) and retyped.code == "drift.field_retyped"
    assert f"'{field}'" in retyped.message


def test_shape_flattens_nested_objects() -> None:
    assert shape_of({"a": {"b": {"c": {"d": 1}}}, "n": 1.5, "l": [1]}) == {
        "a": "object", "a.b": "object", "a.b.c": "object", "n": "number", "l": "array"}
