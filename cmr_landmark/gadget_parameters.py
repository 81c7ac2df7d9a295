"""The gadget's parameters: the <property> elements of a Gadgetron chain, parsed and checked in one place.

Kept apart from :mod:`cmr_landmark.gadget` (which loads torch) so that a client such as ``cmr-landmark replay``
checks the parameters it will send before it starts anything.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import ismrmrd.xsd
import numpy as np

from .annotate import DEFAULT_CROSS_SIZE_MM
from .config import GADGET_LOGGER, MODEL_SEQUENCES, VIEWS
from .series import phases_per_slice_from_header

log = logging.getLogger(GADGET_LOGGER)


class ParameterError(ValueError):
    """A gadget parameter has a value the gadget cannot use."""


PHASE_COUNT_SOURCES = ("header", "slice_change")
# A chain in the older syntax runs a Python gadget as <gadget><dll>gadgetron_python</dll>
# <classname>PythonGadget</classname> with these two properties; Gadgetron turns it into an <external> element and
# forwards every property, these included. They say which module and function to run, which is already done.
LEGACY_PYTHON_GADGET_PROPERTIES = frozenset({"python_module", "python_class"})
MAX_PHASES_PER_SLICE = 1024


@dataclass(frozen=True)
class GadgetParameters:
    """The gadget's parameters, validated. Every field is a <property> of the same name in the chain XML."""

    model: str = ""  # a manifest model name; empty: choose by view and sequence
    view: str = "auto"  # sax | lax | auto (from the protocol's words)
    sequence: str = "auto"  # cine | lge | t1 | any | auto
    probability_threshold: float | None = None  # None: the model's own threshold
    series_index_offset: int = 100
    draw_landmarks: bool = True
    cross_size_mm: float = DEFAULT_CROSS_SIZE_MM
    device: str = "auto"  # auto (GPU when torch sees one) | cpu | cuda
    # header: encodingLimits.phase.maximum + 1 | slice_change: a slice is complete when the next one starts | N
    phases_per_slice: str = "header"
    # GADGETRON_DataRole values to detect on (a chain that fits maps also sends its weighted images and SD maps);
    # empty: every image. An image without a data role is detected on either way (a scanner's own map).
    data_roles: tuple[str, ...] = ()

    @staticmethod
    def from_strings(values: dict[str, str]) -> GadgetParameters:
        """Parse and check the property strings of a chain; unknown names and bad values raise ParameterError."""
        known = {f.name for f in fields(GadgetParameters)}
        values = {name: raw for name, raw in values.items() if name not in LEGACY_PYTHON_GADGET_PROPERTIES}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParameterError(f"unknown gadget parameter(s) {unknown}; known: {sorted(known)}")
        parsed: dict[str, object] = {}
        for name, raw in values.items():
            text = raw.strip()
            try:
                if name in ("model",):
                    parsed[name] = text
                elif name in ("view", "sequence", "device", "phases_per_slice"):
                    parsed[name] = text.lower()
                elif name == "probability_threshold":
                    parsed[name] = None if text.lower() in ("", "auto", "model") else float(text)
                elif name == "series_index_offset":
                    parsed[name] = int(text)
                elif name == "cross_size_mm":
                    parsed[name] = float(text)
                elif name == "data_roles":
                    parsed[name] = tuple(role.strip() for role in text.split(",") if role.strip())
                elif name == "draw_landmarks":
                    if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                        raise ValueError("expected true or false")
                    parsed[name] = text.lower() in ("true", "1", "yes", "on")
            except ValueError as error:
                raise ParameterError(f"gadget parameter {name}={raw!r}: {error}") from error
        parameters = GadgetParameters(**parsed)
        parameters.check()
        return parameters

    def check(self) -> None:
        if self.view not in VIEWS + ("auto",):
            raise ParameterError(f"view must be one of {VIEWS + ('auto',)}, got {self.view!r}")
        if self.sequence not in MODEL_SEQUENCES + ("auto",):
            raise ParameterError(f"sequence must be one of {MODEL_SEQUENCES + ('auto',)}, got {self.sequence!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ParameterError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.probability_threshold is not None and not 0.0 <= self.probability_threshold <= 1.0:
            raise ParameterError(f"probability_threshold must be in [0, 1], got {self.probability_threshold}")
        if not 1 <= self.series_index_offset <= 30000:
            raise ParameterError(f"series_index_offset must be 1..30000, got {self.series_index_offset}")
        if not np.isfinite(self.cross_size_mm) or not 0.5 <= self.cross_size_mm <= 100.0:
            raise ParameterError(f"cross_size_mm must be 0.5..100 mm, got {self.cross_size_mm}")
        count = self.phases_per_slice
        if count not in PHASE_COUNT_SOURCES and not (  # isascii: "²".isdigit() is True, int("²") fails
                count.isascii() and count.isdigit() and 1 <= int(count) <= MAX_PHASES_PER_SLICE):
            raise ParameterError(f"phases_per_slice must be {' or '.join(PHASE_COUNT_SOURCES)} or a whole number "
                                 f"1..{MAX_PHASES_PER_SLICE}, got {self.phases_per_slice!r}")

    def detects_data_role(self, roles: Sequence[str]) -> bool:
        """Whether an image whose GADGETRON_DataRole values are ``roles`` is one to detect on."""
        if not self.data_roles or not roles:
            return True
        wanted = {role.lower() for role in self.data_roles}
        return any(role.lower() in wanted for role in roles)

    def phases_per_slice_count(self, header: ismrmrd.xsd.ismrmrdHeader | None) -> int | None:
        """The series buffer's phases per slice: the header's, the parameter's number, or None (slice_change, or a
        header without a phase limit) for "complete when the next slice starts"."""
        if self.phases_per_slice == "header":
            return phases_per_slice_from_header(header)
        if self.phases_per_slice == "slice_change":
            return None
        return int(self.phases_per_slice)


def _local_name(element: ElementTree.Element) -> str:
    """An element's tag without its namespace ("" for comments and processing instructions)."""
    return element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""


def properties_from_config(config: ElementTree.Element | None) -> dict[str, str]:
    """Every <property> in a Gadgetron configuration, in either syntax Gadgetron uses:
    ``<property name="view" value="sax"/>`` or ``<property><name>view</name><value>sax</value></property>``.
    Namespaces are ignored (chain files declare one, the configuration sent to the gadget may not)."""
    properties: dict[str, str] = {}
    if config is None:
        return properties
    for element in config.iter():
        if _local_name(element) != "property":
            continue
        children = {_local_name(child): (child.text or "") for child in element}
        name = element.get("name", children.get("name", "")).strip()
        if name:
            properties[name] = element.get("value", children.get("value", ""))
    return properties


def gadget_configuration(chain: ElementTree.Element) -> ElementTree.Element:
    """The part of a configuration file that holds this gadget's properties.

    A whole Gadgetron chain (xml_configs/*.xml) also holds the reconstruction gadgets' properties, which are not
    ours. From a chain, this is the <configuration> of the <external> block that starts this gadget (its
    <execute> name contains cmr_landmark) or connects to it (<connect>). A file without an <external> block is taken to
    be the gadget's own configuration, as Gadgetron sends it."""
    externals = [element for element in chain.iter() if _local_name(element) == "external"]
    if not externals:
        return chain
    for external in externals:
        children = {_local_name(child): child for child in external}
        execute = children.get("execute")
        if "connect" in children or (execute is not None and "cmr_landmark" in execute.get("name", "")):
            configuration = children.get("configuration")
            return configuration if configuration is not None else ElementTree.Element("configuration")
    raise ParameterError("the chain has no <external> block that executes gadgets.cmr_landmark_gadget or connects "
                         "to a running gadget")


def chain_properties(path: Path | str) -> dict[str, str]:
    """The landmark gadget's <property> values in a chain file (xml_configs/*.xml) or a gadget configuration file.
    Raises OSError where it cannot be read, ElementTree.ParseError where it is not XML, ParameterError where a
    chain has no landmark gadget."""
    return properties_from_config(gadget_configuration(ElementTree.parse(path).getroot()))


def parse_config_bytes(raw: bytes | str | None) -> ElementTree.Element | None:
    """The configuration XML, with the trailing NULs MRD/FIRE clients send stripped; None (and a warning) when
    it is missing or not XML, e.g. a client that sends only a configuration name."""
    if raw is None:
        return None
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = text.rstrip("\x00").strip()
    if not text:
        return None
    try:
        return ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        log.warning("configuration is not XML (%s): using default parameters; it was %r", error, text[:200])
        return None
