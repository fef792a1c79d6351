"""Solara components of the browser app: tissue view with legend and cell inspector, live plots,
parameter controls, status line. Each takes the ``MarrowModel`` and re-renders when Mesa's
``update_counter`` changes (after every Step, Play tick and Reset).

A Mesa user can put any of them in their own SolaraViz page::

    page = SolaraViz(model, components=[TissueView, PlotsView])
"""

from __future__ import annotations

import base64
import html
import time
from typing import Any

import solara
from mesa.visualization.utils import update_counter

from ..errors import MarrowError
from ..model import MarrowModel
from .inspect import describe_voxel
from .params import PendingOverrides, controls_for
from .plots import panels_png
from .render import (
    FIELD_LUT, TissueRenderer, background_entries, encode_png, legend_entries, rgb_hex,
)

#: Target on-screen width of the tissue picture (CSS px); each voxel becomes an integer number
#: of pixels so that a click maps back to one voxel exactly.
TISSUE_WIDTH_PX = 480
ZONES_CHOICE = "zones"

# Renderers per model (the background is prepared once per section). Keyed by id(model) with
# the model kept alive alongside, so a reused id cannot return a stale renderer.
_RENDERERS: dict[int, tuple[MarrowModel, TissueRenderer]] = {}
# Last plot image per model and number of records: plots change only when a record is taken.
_PLOT_CACHE: dict[int, tuple[MarrowModel, int, bytes]] = {}


def renderer_for(model: MarrowModel) -> TissueRenderer:
    """The model's tissue renderer (built on first use)."""
    hit = _RENDERERS.get(id(model))
    if hit is None or hit[0] is not model:
        _RENDERERS.clear()  # one live model per page: drop the previous model's buffers
        hit = (model, TissueRenderer(model.engine.geometry))
        _RENDERERS[id(model)] = hit
    return hit[1]


def field_labels(model: MarrowModel) -> dict[str, str]:
    """Field name -> label ("tgfb" -> "TGF-β1") of the model's scenario."""
    fields = model.marrow_scenario.data["fields"]
    return {name: fields[name].get("label", name) for name in model.engine.fields.names}


def scale_for(shape: tuple[int, int]) -> int:
    """Screen pixels per voxel so the picture is about ``TISSUE_WIDTH_PX`` wide."""
    return max(1, round(TISSUE_WIDTH_PX / max(shape)))


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _swatch(rgb, label: str) -> solara.Element:
    return solara.v.Html(tag="div", style_="display:flex;align-items:center;gap:6px;"
                         "font-size:13px;line-height:18px", children=[
        solara.v.Html(tag="span", style_=f"display:inline-block;width:14px;height:14px;"
                      f"background:{rgb_hex(rgb)};border:1px solid #888"),
        solara.v.Html(tag="span", children=[label]),
    ])


@solara.component
def Legend(model: MarrowModel, field: str | None) -> None:
    """Colour key of the tissue picture, with the number of each kind of cell."""
    update_counter.get()
    labels = field_labels(model)
    with solara.Column(gap="2px", classes=["marrow-legend"]):
        solara.Text("Cells", style={"font-weight": "bold", "font-size": "13px"})
        entries = legend_entries(model.engine.cells)
        if not entries:
            solara.Text("(none)", style={"font-size": "13px"})
        for label, rgb, count in entries:
            _swatch(rgb, f"{label}: {count:,}")
        solara.Text("Tissue", style={"font-weight": "bold", "font-size": "13px"})
        for label, rgb in background_entries(labels.get(field) if field else None):
            _swatch(rgb, label)
        if field:
            top = renderer_for(model).field_max(model.engine.fields.values[field])
            ramp = ",".join(rgb_hex(FIELD_LUT[i]) for i in range(0, 256, 32))
            solara.Text(f"{labels[field]} (normalised)", style={"font-size": "13px"})
            solara.v.Html(tag="div", style_=f"width:150px;height:12px;border:1px solid #888;"
                          f"background:linear-gradient(to right,{ramp})")
            solara.Text(f"0 … {top:.3g}", style={"font-size": "12px"})
        dx = model.engine.geometry.dx_um
        ny, nx = model.engine.geometry.labels.shape
        solara.Text(f"1 voxel = {dx:g} µm; section {nx * dx / 1000:.2f} × {ny * dx / 1000:.2f} mm",
                    style={"font-size": "12px", "color": "#555"})


@solara.component
def CellInspector(model: MarrowModel, voxel: tuple[int, int] | None) -> None:
    """Facts about the clicked voxel: tissue, zone, field values, and the cell there."""
    update_counter.get()
    if voxel is None:
        solara.Text("Click the tissue to inspect a voxel and its cell.",
                    style={"font-size": "13px", "color": "#555"})
        return
    info = describe_voxel(model.engine, *voxel)
    if not info:
        return
    rows: list[tuple[str, Any]] = list(info["voxel"].items())
    rows += [(f"{k} here", f"{v:.4g}") for k, v in info["fields"].items()]
    if info["cell"] is None:
        rows.append(("cell", "none (normal haematopoietic tissue)" if
                     info["voxel"]["tissue"] == "marrow" else "—"))
    else:
        rows += [(f"cell {k}", v if not isinstance(v, float) else f"{v:.4g}")
                 for k, v in info["cell"].items()]
    body = "".join(f"<tr><td style='padding-right:10px;color:#555'>{k}</td><td>{v}</td></tr>"
                   for k, v in rows)
    solara.HTML(tag="table", unsafe_innerHTML=body,
                attributes={"class": "marrow-inspector", "style": "font-size:12px"})


@solara.component
def TissueView(model: MarrowModel) -> None:
    """The section: cells over a field or the zones, with a legend and a click inspector."""
    update_counter.get()
    background, set_background = solara.use_state(ZONES_CHOICE)
    voxel, set_voxel = solara.use_state(None)
    labels = field_labels(model)
    if background != ZONES_CHOICE and background not in labels:
        background = ZONES_CHOICE  # the new scenario has no such field
    field = None if background == ZONES_CHOICE else background

    t0 = time.perf_counter()
    renderer = renderer_for(model)
    rgb = renderer.render(model.engine.cells,
                          None if field is None else model.engine.fields.values[field])
    png = encode_png(rgb)
    frame_ms = (time.perf_counter() - t0) * 1e3
    ny, nx = rgb.shape[:2]
    scale = scale_for((ny, nx))

    def on_click(widget, event, data):
        ix = int(float(data.get("offsetX", -1)) // scale)
        iy = int(float(data.get("offsetY", -1)) // scale)
        if 0 <= iy < ny and 0 <= ix < nx:
            set_voxel((iy, ix))

    names = {ZONES_CHOICE: "Zones"} | {k: v for k, v in labels.items()}
    keys = {v: k for k, v in names.items()}
    with solara.Card(f"Tissue at t = {model.time_h:g} h ({model.time_h / 24:.2f} d)",
                     classes=["marrow-tissue"], margin=0):
        with solara.Row(style={"align-items": "center"}):
            solara.Text("Background:", style={"font-size": "13px"})
            solara.ToggleButtonsSingle(value=names[background], values=list(keys),
                                       on_value=lambda label: set_background(keys[label]),
                                       dense=True)
        with solara.Row(gap="16px", style={"align-items": "flex-start", "flex-wrap": "wrap"}):
            img = solara.v.Html(tag="img", attributes={
                "src": _data_url(png), "alt": "tissue", "class": "marrow-tissue-image",
                "width": str(nx * scale), "height": str(ny * scale),
                "data-frame-ms": f"{frame_ms:.1f}",
            }, style_="image-rendering:pixelated;cursor:crosshair;border:1px solid #ccc")
            solara.v.use_event(img, "click", on_click)
            Legend(model, field)
        if voxel is not None:
            # a crosshair marker over the picture would need an overlay; naming the voxel is enough
            solara.Text(f"Selected voxel {voxel[0]}, {voxel[1]}", style={"font-size": "12px"})
        CellInspector(model, voxel)
        solara.Text(f"frame drawn in {frame_ms:.1f} ms", style={"font-size": "11px",
                                                                "color": "#888"})


@solara.component
def PlotsView(model: MarrowModel) -> None:
    """Live plots of the DataCollector: the panels whose metrics this run records."""
    update_counter.get()
    n = len(model.datacollector.model_vars.get("time_h", []))
    hit = _PLOT_CACHE.get(id(model))
    if hit is None or hit[0] is not model or hit[1] != n:
        _PLOT_CACHE.clear()
        df = model.datacollector.get_model_vars_dataframe()
        hit = (model, n, panels_png(df, field_labels(model)))
        _PLOT_CACHE[id(model)] = hit
    with solara.Card(f"Recorded metrics ({n} records, every "
                     f"{model.engine.record_every_h:g} h)", classes=["marrow-plots"], margin=0):
        solara.v.Html(tag="img", attributes={"src": _data_url(hit[2]), "alt": "plots",
                                             "class": "marrow-plots-image",
                                             "data-records": str(n)},
                      style_="max-width:100%")


@solara.component
def ParameterPanel(model: MarrowModel, pending: PendingOverrides) -> None:
    """Sliders and toggles from the scenario schema, with units.

    Live controls change the running model at once (``MarrowModel.set_parameter``); set-up
    controls are kept as pending changes and applied by Reset.
    """
    update_counter.get()
    message, set_message = solara.use_state(None)
    _, set_version = solara.use_state(0)
    name = model.scenario_name
    waiting = pending.for_scenario(name)
    controls = controls_for(model.marrow_scenario)

    def apply(control, value):
        try:
            if control.live:
                model.set_parameter(control.key, value)
                set_message(("success", f"{control.key} = {value:g} from t = {model.time_h:g} h"
                             if not isinstance(value, bool) else
                             f"{control.key} {'on' if value else 'off'} from t = "
                             f"{model.time_h:g} h"))
            else:
                pending.set(name, control.key, value)
                set_message(("info", f"{control.key} = {value:g} applies at Reset"))
            set_version(lambda v: v + 1)
        except MarrowError as exc:
            set_message(("error", str(exc)))

    def discard():
        pending.clear(name)
        set_message(None)
        set_version(lambda v: v + 1)

    with solara.Card("Parameters", classes=["marrow-params"], margin=0):
        if message:
            level, text = message
            {"success": solara.Success, "info": solara.Info, "error": solara.Error}[level](
                text, dense=True)
        if waiting:
            with solara.Row(style={"align-items": "center"}):
                solara.Text(f"{len(waiting)} change(s) apply at Reset: "
                            + ", ".join(f"{k} = {v}" for k, v in waiting.items()),
                            style={"font-size": "12px"})
                solara.Button("Discard", on_click=discard, text=True, dense=True)
        sections: dict[tuple[bool, str], list] = {}
        for c in controls:
            sections.setdefault((not c.live, c.section), []).append(c)
        for (setup, section), items in sections.items():
            title = f"{section} ({len(items)}) — {'applied at Reset' if setup else 'live, while running'}"
            with solara.Details(title, expand=not setup):
                with solara.Column(gap="0px"):
                    for c in items:
                        value = waiting.get(c.key, model.marrow_scenario.get(c.key))
                        _control(c, value, apply)


def _control(c, value, apply) -> None:
    def on_value(v, c=c):
        apply(c, v)

    if c.kind == "bool":
        solara.Checkbox(label=c.label, value=bool(value), on_value=on_value)
    elif c.kind == "int":
        solara.SliderInt(c.label, value=int(value), min=int(c.min), max=int(c.max),
                         step=int(c.step), on_value=on_value, thumb_label="always")
    else:
        solara.SliderFloat(c.label, value=float(value), min=c.min, max=c.max, step=c.step,
                           on_value=on_value, thumb_label="always")


@solara.component
def StatusLine(model: MarrowModel) -> None:
    """Scenario, seed, simulated time and any problem with the last Reset's inputs."""
    update_counter.get()
    error = getattr(model, "input_error", None)
    if error:
        solara.Warning(error, dense=True)
    counts = model.engine.cell_counts()
    total = sum(counts.values())
    # Plain HTML, not solara.Markdown: Markdown loads mermaid from a CDN on first use.
    solara.HTML(tag="div", unsafe_innerHTML=(
        f"<b>{html.escape(str(model.scenario_name))}</b> — seed {model.seed} — "
        f"t = {model.time_h:g} h ({model.time_h / 24:.2f} d), step {int(model.time)} — "
        f"{total:,} cells — {len(model.live_changes)} change(s) while running"),
        classes=["marrow-status"], style="font-size:14px;margin:4px 0 8px 0")


__all__ = ["CellInspector", "Legend", "ParameterPanel", "PlotsView", "StatusLine", "TissueView",
           "field_labels", "renderer_for", "scale_for"]
