"""Which model an image series needs: view (sax/lax) and sequence (cine/lge/t1/any) from the protocol's words.

The rule (documented in docs/gadget.md): the texts of the ISMRMRD header (measurementInformation protocolName,
seriesDescription, sequenceName; sequenceParameters sequence_type; every userParameterString value) and of the
image meta (ImageComment, SequenceDescription, GADGETRON_SeqDescription, GADGETRON_ImageComment) are split into
words at every character that is not a letter or digit, upper-cased, and a word that *starts with* one of the
keywords below decides. Long-axis words win over short-axis words (a "SAX-planned 4CH" is a long-axis image);
for the sequence, words naming a contrast no sequence-specific model was trained on (a T2 or T2* map, T2-weighted
black blood) win and ask for the contrast-agnostic model; then T1 words, then ECV (also the contrast-agnostic
model), then LGE words, then cine words; the word ANY (what `convert --sequence any` writes) asks for the
contrast-agnostic model where nothing else decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import ismrmrd.xsd

# "LONG" alone is not one ("Long_TR"); "long axis" is (see view_from_texts). HLA / VLA: horizontal / vertical long axis.
LAX_WORDS = ("LAX", "2CH", "3CH", "4CH", "CH2", "CH3", "CH4", "2CV", "3CV", "4CV", "HLA", "VLA", "LVOT", "LONGAXIS")
SAX_WORDS = ("SAX", "SA", "SHORT")
T1_WORDS = ("MOLLI", "SHMOLLI", "T1MAP", "T1MAPPING", "T1", "SASHA")
LGE_WORDS = ("LGE", "PSIR", "MAGIR", "DELAYED", "DE", "SCAR")
CINE_WORDS = ("CINE", "TRUFI", "BSSFP", "SSFP", "FIESTA", "BTFE")
# Contrasts none of the sequence-specific models was trained on. They win over the others because a map's protocol
# often names its readout as well ("T2map_bSSFP", a T2-prepared bSSFP), and the cine model on a T2 map loses most
# RV insertion points (models/sax_any.md: sax_cine finds 45 % of A-RVI on T2 maps). "T2" is whole, and a "T2"
# followed by "PREP..." is a preparation, not a T2 map ("T2-prep LGE"); "T2*" splits into "T2". TSE is left out:
# as a prefix it would take Siemens' TSENSE real-time cines, and a T2-weighted TSE names T2 anyway.
OTHER_CONTRAST_WORDS = ("T2", "T2MAP", "T2STAR", "T2W", "R2STAR", "STIR", "HASTE", "BLACKBLOOD", "DARKBLOOD")
# ECV maps go to the contrast-agnostic model too, but after the T1 words: a protocol naming MOLLI and ECV is more
# often the post-contrast T1 mapping an ECV map is computed from, which is sax_t1's (set sequence=any in the chain
# that receives ECV maps named so).
ECV_WORDS = ("ECV",)
META_TEXT_KEYS = ("ImageComment", "SequenceDescription", "GADGETRON_SeqDescription", "GADGETRON_ImageComment")


def _words(texts: Iterable[str]) -> list[str]:
    return [word for text in texts for word in re.split(r"[^A-Z0-9]+", str(text).upper()) if word]


def _any_word(words: list[str], keywords: tuple[str, ...]) -> bool:
    # "SA" and "DE" and "T1" are short: require them whole, the longer keywords as prefixes ("MOLLI5", "LGE3D").
    return any(word == keyword or (len(keyword) > 2 and word.startswith(keyword)) for word in words
               for keyword in keywords)


def header_texts(header: ismrmrd.xsd.ismrmrdHeader | None) -> list[str]:
    """The free texts of an ISMRMRD header that name a protocol."""
    if header is None:
        return []
    texts: list[str] = []
    info = header.measurementInformation
    if info is not None:
        texts += [t for t in (info.protocolName, info.seriesDescription, info.sequenceName) if t]
    if header.sequenceParameters is not None and header.sequenceParameters.sequence_type:
        texts.append(header.sequenceParameters.sequence_type)
    if header.userParameters is not None:
        texts += [p.value for p in header.userParameters.userParameterString if p.value]
    return texts


def meta_values(meta: dict, key: str) -> list[str]:
    """The values of one image meta attribute as text: none where it is missing (a meta value may be one value or a
    list)."""
    value = meta.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def meta_texts(meta: dict) -> list[str]:
    """The image meta values that describe the series."""
    return [text for key in META_TEXT_KEYS for text in meta_values(meta, key)]


def view_from_texts(texts: Iterable[str]) -> str | None:
    """'lax', 'sax', or None when no word names the view."""
    words = _words(texts)
    words += [first + second for first, second in zip(words, words[1:], strict=False) if first == "LONG"]  # LONG AXIS
    if _any_word(words, LAX_WORDS):
        return "lax"
    if _any_word(words, SAX_WORDS):
        return "sax"
    return None


def sequence_from_texts(texts: Iterable[str]) -> str | None:
    """'any' (a contrast no sequence-specific model knows), 't1', 'lge', 'cine', or None when no word names the
    sequence."""
    words = _words(texts)
    words = [word for word, after in zip(words, [*words[1:], ""], strict=False)
             if not (word == "T2" and after.startswith("PREP"))]  # a T2 preparation, not a T2 map
    for sequence, keywords in (("any", OTHER_CONTRAST_WORDS), ("t1", T1_WORDS), ("any", ECV_WORDS),
                               ("lge", LGE_WORDS), ("cine", CINE_WORDS)):
        if _any_word(words, keywords):
            return sequence
    return "any" if "ANY" in words else None
