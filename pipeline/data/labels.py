"""Label sets shared by every stage (no heavy imports)."""

from pipeline.errors import InputError

THEMES = ["Gourmet", "Keitai", "Kyoto", "Sports"]
THEME_JA = {"Gourmet": "グルメ", "Keitai": "携帯電話", "Kyoto": "京都観光", "Sports": "スポーツ"}
SENTIMENTS = ["negative", "neutral", "positive"]
SPLITS = ["train", "dev", "test"]


def theme_from_name(name: str) -> str:
    """Accept a theme as 'Gourmet', 'gourmet' or 'グルメ'; else an ``InputError`` (a ValueError) listing the valid ones."""
    for theme in THEMES:
        if name.lower() == theme.lower() or name == THEME_JA[theme]:
            return theme
    valid = ", ".join(f"{t} ({THEME_JA[t]})" for t in THEMES)
    raise InputError("E220", f"Unknown theme '{name}'.", hint=f"Valid themes: {valid}.")
