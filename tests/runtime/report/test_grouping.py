"""`--group-by`: auto (system fields, AudioMOS 2025 Track 2 ids, parent folder), fields, regexes."""

from __future__ import annotations

import pytest

from mmmos.runtime.errors import InputError
from mmmos.runtime.report.grouping import CHALLENGE_SYSTEM_RE, NO_GROUP, challenge_system, parse_group_by

# Ids as the challenge's test-set annotations spell them (facebookresearch/audiobox-aesthetics,
# audiomos2025_track2/audiomos2025_track2_human_annotations.jsonl: 36 systems x 85 clips).
CHALLENGE_IDS = {
    "audiomos2025-track2-sys0v1wm-utt0dJodp": "sys0v1wm",
    "audiomos2025-track2-sys25Voz-utt1gXajn": "sys25Voz",
    "audiomos2025-track2-sysKUd7C-utt1qUDBN": "sysKUd7C",
}


@pytest.mark.parametrize(("clip", "system"), CHALLENGE_IDS.items())
def test_auto_finds_the_challenge_system_in_paths_and_ids(clip: str, system: str) -> None:
    g = parse_group_by("auto")
    assert g.group_of({"path": f"/data/amc25/eval/{clip}.wav"}) == system
    assert g.group_of({"path": clip}) == system  # a challenge answer file: the id is the path
    assert g.group_of({"path": "/x/clip.wav", "sample_id": clip}) == system


def test_auto_prefers_a_system_field_then_the_parent_folder() -> None:
    g = parse_group_by("auto")
    assert g.group_of({"path": "audiomos2025-track2-sys0v1wm-utt0dJodp.wav", "system_id": "mine"}) == "mine"
    assert g.group_of({"path": "x.wav", "system": 3}) == "3"
    assert g.group_of({"path": "/pam/audio/audiogen_m/generated_audio_index_1.wav"}) == "audiogen_m"
    assert g.group_of({"path": "bare.wav"}) == NO_GROUP
    assert g.kind == "auto" and "audiomos2025-track2" in g.describe


def test_challenge_regex_does_not_fire_inside_other_words() -> None:
    assert challenge_system({"path": "a/sys64e2f-utt491a78b.wav"}) == "sys64e2f"
    assert challenge_system({"path": "a/ecosys1-utt2.wav"}) is None
    assert challenge_system({"path": "a/sys1.wav"}) is None
    assert CHALLENGE_SYSTEM_RE.search("audiomos2025-track2-sysw48qy-uttAbC12").group(1) == "sysw48qy"


def test_fields_parent_and_none() -> None:
    row = {"path": "/d/sysA/clip_1.wav", "model": {"name": "aes"}, "speaker": "", "ood": {"flag": True}}
    assert parse_group_by("model.name").group_of(row) == "aes"
    assert parse_group_by("ood.flag").group_of(row) == "True"
    assert parse_group_by("speaker").group_of(row) == NO_GROUP
    assert parse_group_by("parent").group_of(row) == "sysA"
    assert parse_group_by("none").group_of(row) == "all"
    assert parse_group_by("system_id").kind == "field"


def test_regexes_over_the_path() -> None:
    row = {"path": "corpus\\spk12_take3_x.wav"}
    assert parse_group_by(r"re:([^/_]+)_[^/]*$").group_of(row) == "spk12"  # backslashes read as /
    assert parse_group_by(r"([^/_]+)_[^/]*$").group_of(row) == "spk12"  # not a field name: a regex
    assert parse_group_by(r"re:take(?P<group>\d)").group_of(row) == "3"
    assert parse_group_by(r"re:spk\d+").group_of(row) == "spk12"  # no group: the whole match
    assert parse_group_by(r"re:nomatch(\d)").group_of(row) == NO_GROUP
    assert parse_group_by("re:spk").kind == "regex"


@pytest.mark.parametrize("spec", ["", "  ", "re:(", "(unclosed"])
def test_bad_specs_say_what_to_write(spec: str) -> None:
    with pytest.raises(InputError, match="--group-by"):
        parse_group_by(spec)
