from __future__ import annotations

import hashlib
import string

from hypothesis import given
from hypothesis import strategies as st

from bridges.okai.signing import canonical_string, sign

DOC_USER_KEY = "4tz3oa28y5h1drnpubqgjf7km9l0c6xi"
DOC_SIGN_KEY = "lu4yjbmr18evxozc7ig0kf2h5stwaqd6"
DOC_PARAMS: dict[str, object] = {
    "userKey": DOC_USER_KEY,
    "timestamp": "1646617100",
    "sign": "78f2bbb99ac773ed6b6ad7667794f3c2",
    "imei": "863795050079434",
    "operate": "unlock",
    "expireTime": 5,
}


def test_sign_business_matches_document_recipe() -> None:
    # The document: MD5("expireTime=5&imei=863795050079434&operate=unlock" + signKey), computed here by hand.
    expected = hashlib.md5(
        b"expireTime=5&imei=863795050079434&operate=unlocklu4yjbmr18evxozc7ig0kf2h5stwaqd6"
    ).hexdigest()
    assert sign(DOC_PARAMS, DOC_SIGN_KEY, "business") == expected


def test_sign_all_includes_user_key_and_timestamp() -> None:
    text = f"expireTime=5&imei=863795050079434&operate=unlock&timestamp=1646617100&userKey={DOC_USER_KEY}{DOC_SIGN_KEY}"
    assert sign(DOC_PARAMS, DOC_SIGN_KEY, "all") == hashlib.md5(text.encode()).hexdigest()


def test_sign_document_example_value_does_not_reproduce() -> None:
    # Recorded on purpose: the value printed in the document matches neither parameter set.
    for mode in ("all", "business"):
        assert sign(DOC_PARAMS, DOC_SIGN_KEY, mode) != DOC_PARAMS["sign"]


def test_canonical_string_sorts_by_character_order() -> None:
    params = {"b": 1, "ab": 2, "a": 3, "B": 4, "sign": "x", "skip": None}
    assert canonical_string(params, "business") == "B=4&a=3&ab=2&b=1"


def test_sign_utf8_encoded() -> None:
    params = {"name": "Zürich 滑板车"}
    expected = hashlib.md5("name=Zürich 滑板车key".encode()).hexdigest()
    assert sign(params, "key", "business") == expected


@given(
    st.dictionaries(
        st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
        st.one_of(st.integers(), st.text(max_size=12)),
        max_size=6,
    )
)
def test_sign_independent_of_parameter_order(params: dict[str, object]) -> None:
    shuffled = dict(reversed(list(params.items())))
    assert sign(params, DOC_SIGN_KEY, "all") == sign(shuffled, DOC_SIGN_KEY, "all")
    expected = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign")
    assert canonical_string(params, "all") == expected
