"""A transcript's segments as subtitles: SubRip (SRT) and WebVTT, as OpenAI's transcription
answers them (`response_format` "srt" and "vtt"). A few lines of our own: the formats are two
timestamp notations and a block per cue; what needs care is below (rounding, escaping)."""

from __future__ import annotations

import html
from collections.abc import Iterable

from lea_local.asr.base import TranscriptSegment


def timestamp(seconds: float, separator: str) -> str:
    """`HH:MM:SS<separator>mmm`, rounded to the nearest millisecond before it is split, so that
    59.9996 s is 00:01:00.000 (never 00:00:59.1000); hours go past 99 if they must."""
    milliseconds = max(round(seconds * 1000), 0)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends a cue, and "-->" inside a cue reads as a timing line: one line of text.
    return " ".join(text.split()).replace("-->", "->")


def to_srt(segments: Iterable[TranscriptSegment]) -> str:
    """Cues numbered from 1, `00:00:01,234 --> 00:00:02,345`, a blank line after each."""
    cues = [
        f"{number}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{_cue_text(s.text)}\n"
        for number, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: Iterable[TranscriptSegment]) -> str:
    """`WEBVTT`, then cues `00:00:01.234 --> 00:00:02.345`. Cue text is HTML-like in WebVTT:
    `&`, `<` and `>` are written as entities so that no word reads as a tag."""
    cues = [
        f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{html.escape(_cue_text(s.text), quote=False)}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)
