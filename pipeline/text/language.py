"""Is a text Japanese? A script check run before classifying, so that English, Chinese or emoji-only input gets a
warning beside its label instead of a confident answer nobody should trust.

The check counts letters by script (``unicodedata``: kana, kanji, other letters; digits, punctuation, spaces and
emoji are not letters):

* **kana** decide: no other language writes hiragana or katakana, and Japanese text with Latin words in it
  ("windowsですか？", "YouTubeとかみます？") still has them. A text whose letters are at least ``MIN_KANA_SHARE`` kana
  is Japanese.
* without kana, a text in **kanji only** ("京都観光", "場所：京都市左京区百万遍") is Japanese when kana + kanji make
  at least ``JAPANESE_SHARE_THRESHOLD`` of its letters, unless it is Chinese: simplified characters that Japanese
  does not write (outside JIS X 0208, e.g. 选, 请, 钥; ``MIN_NON_JIS_SHARE`` of its kanji), two or more different
  Chinese grammatical words (的, 是, 們, 這, 嗎...: ``CHINESE_FUNCTION_CHARS``), or a run of
  ``MIN_CJK_FOR_KANA_RULE`` kanji or more without a single kana.
* everything else (English, Russian, German..., emoji or digits only) gets a warning.

The thresholds were chosen on data (``jpipe bench language`` prints the figures): Japanese from KNBC's training
sentences and modern chat / Wikipedia lines, other languages from the GnuPG help texts in 26 languages.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Chosen on data (see the module docstring): every KNBC training sentence passes, and so do 99.9% of modern lines.
MIN_KANA_SHARE = 0.1
JAPANESE_SHARE_THRESHOLD = 0.5
MIN_CJK_FOR_KANA_RULE = 16
# Chinese particles, pronouns and measure words; in kana-less Japanese they are rare (的 in 目的 is one, not two).
CHINESE_FUNCTION_CHARS = frozenset("的是了们們这這个個么麼吗嗎呢吧与與您")
MIN_NON_JIS_SHARE = 0.2
ITERATION_MARKS = frozenset("々〆〇ヶヵ")


def script_of(char: str) -> str | None:
    """'kana', 'kanji', 'other' (any other letter) or None (digits, punctuation, spaces, symbols, emoji)."""
    code = ord(char)
    if 0x3041 <= code <= 0x309F or 0x30A0 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9F:
        return "kana" if char != "・" else None  # the katakana middle dot is punctuation
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF or char in ITERATION_MARKS:
        return "kanji"
    return "other" if unicodedata.category(char).startswith("L") else None


@dataclass(frozen=True)
class LanguageCheck:
    """What :func:`check_language` saw: letter counts by script, and a warning when the text is not Japanese."""

    kana: int
    kanji: int
    other_letters: int
    non_jis_kanji: int = 0  # kanji outside JIS X 0208 (cp932): simplified Chinese characters, mostly
    chinese_function: int = 0  # distinct characters of CHINESE_FUNCTION_CHARS (是非是非, "by all means", has one)

    @property
    def letters(self) -> int:
        return self.kana + self.kanji + self.other_letters

    @property
    def japanese_share(self) -> float:
        return (self.kana + self.kanji) / self.letters if self.letters else 0.0

    @property
    def warning(self) -> str | None:
        """None for Japanese; otherwise a short reason the prediction should not be trusted."""
        if not self.letters:
            return "no letters (only digits, symbols or emoji): not Japanese text"
        if self.kana >= MIN_KANA_SHARE * self.letters:
            return None
        if self.non_jis_kanji and self.non_jis_kanji >= MIN_NON_JIS_SHARE * self.kanji:
            return f"not Japanese: {self.non_jis_kanji} of its {self.kanji} kanji are not used in Japanese (Chinese?)"
        if self.chinese_function >= 2:
            return f"not Japanese: no kana, and Chinese function words ({self.chinese_function})"
        if self.kanji >= MIN_CJK_FOR_KANA_RULE and self.kana == 0:
            return f"not Japanese: {self.kanji} kanji and no kana (Chinese?)"
        if self.japanese_share < JAPANESE_SHARE_THRESHOLD:
            return f"not Japanese: {self.kana + self.kanji} kana or kanji among {self.letters} letters"
        return None

    @property
    def japanese(self) -> bool:
        return self.warning is None

    def to_json(self) -> dict:
        return {"language": "ja" if self.japanese else "other", "japanese_share": round(self.japanese_share, 3), "warning": self.warning}


def check_language(text: str) -> LanguageCheck:
    """Count the letters of ``text`` by script (see the module docstring)."""
    counts = {"kana": 0, "kanji": 0, "other": 0, "non_jis": 0}
    for char in text:
        script = script_of(char)
        if script:
            counts[script] += 1
        if script == "kanji":
            counts["non_jis"] += not _in_jis(char)
    return LanguageCheck(
        kana=counts["kana"],
        kanji=counts["kanji"],
        other_letters=counts["other"],
        non_jis_kanji=counts["non_jis"],
        chinese_function=len(CHINESE_FUNCTION_CHARS.intersection(text)),
    )


def _in_jis(char: str) -> bool:
    """Whether Shift_JIS (cp932: JIS X 0208 and its common extensions) has ``char``."""
    try:
        char.encode("cp932")
    except UnicodeEncodeError:
        return False
    return True
