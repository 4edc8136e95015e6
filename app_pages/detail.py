"""Model detail page: the verdict, why, and every piece of evidence behind it.

Upstream text (ids, error messages, details) is shown through ``st.code``,
``st.dataframe`` or escaped alert boxes, never as markdown.  The query string
(``?model=ID&provider=P``) makes a verdict a shareable link.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.outputs import dashboard, explain, views
from app_pages import shared

_BOX = {"works": "success", "blocked": "error", "wait": "warning", "fix": "warning", "not_judged": "warning",
        "predicted": "info"}


def _target(targets: list[tuple[str, str]], findings: pd.DataFrame) -> tuple[str, str]:
    """The target to show: a new link's query string, else the last one opened, else the first blocked one."""
    state = st.session_state
    params = st.query_params
    asked = (params.get("model"), params.get("provider"))
    if asked[0] and asked != state.get("detail_link_seen"):
        # Honour a link once: after that the picker leads, and rewrites the link.
        state["detail_link_seen"] = asked
        matches = [t for t in targets if t[0] == asked[0] and (asked[1] is None or t[1] == asked[1])]
        if matches:
            return matches[0]
        shared.say("warning", f"The linked model has no finding in run #{shared.context().run_id}.", asked[0])
    remembered = state.get("detail_pick") or state.get("detail_target")
    if remembered in set(targets):
        return remembered
    blocked = findings[findings["blocked"]]
    first = blocked.iloc[0] if len(blocked) else findings.iloc[0]
    return str(first["model_id"]), str(first["provider"])


ctx = shared.require_run()
findings = shared.view(ctx).findings
if findings.empty:
    shared.say("info", f"Run #{ctx.run_id} has no findings: it stopped before probing any model.")
    st.stop()

targets = list(zip(findings["model_id"], findings["provider"]))
wanted = _target(targets, findings)
if st.session_state.get("detail_pick") != wanted:
    st.session_state["detail_pick"] = wanted

st.title("Model detail")
model_id, provider = st.selectbox("Model and provider", targets, key="detail_pick",
                                  format_func=lambda t: f"{t[0]} · {t[1]}")
st.session_state["detail_target"] = (model_id, provider)
st.session_state["detail_link_seen"] = (model_id, provider)
st.query_params.update({"model": model_id, "provider": provider})

evidence = shared.load_evidence(ctx.store_path, ctx.version, ctx.run_id, model_id, provider)
finding = evidence["finding"]
verdict = explain.verdict(finding)

st.subheader("Verdict")
shared.say(_BOX[verdict.kind], verdict.title, evidence["why"])
for title, detail in dashboard.run_level_episodes(evidence["history"]):
    shared.say("info", title, detail)

request, reproduce = st.columns(2)
with request:
    st.subheader("The request that was sent")
    st.caption("URL")
    st.code(evidence["request"]["url"], language=None, wrap_lines=True)
    st.caption("Model string")
    st.code(evidence["request"]["model_string"], language=None, wrap_lines=True)
    if finding.get("working_settings"):
        st.caption("Request settings that worked (request experiment)")
        st.code(finding["working_settings"], language=None, wrap_lines=True)
    st.caption("What the gateway tells its users")
    st.code(evidence["message"] or "", language=None, wrap_lines=True)
with reproduce:
    st.subheader("Reproduce it")
    st.caption("Set HF_TOKEN first; the token is never stored.")
    st.code(evidence["curl"], language="bash", wrap_lines=True)
    st.link_button("Open on Hugging Face", evidence["hub_page"], icon=":material/open_in_new:", key="detail_hub_link")

answer = evidence["answer"]
if answer["outcome"] not in (None, "chat"):
    st.subheader("What came back")
    cells = st.columns([1, 6])
    cells[0].metric("Status", "no answer" if answer["http_status"] is None else str(answer["http_status"]),
                    border=True)
    with cells[1]:
        # Codes run long (model_not_supported): as text that wraps, not a tile that cuts them.
        st.caption("Error code")
        st.code(answer["error_code"] or "none", language=None, wrap_lines=True)
        st.caption("Message")
        st.code(answer["error_message"] or "", language=None, wrap_lines=True)
    if answer["body_excerpt"]:
        st.caption("Body (excerpt, control characters shown escaped, the token scrubbed)")
        st.code(answer["body_excerpt"], language=None, wrap_lines=True)
    if answer["headers"]:
        st.dataframe(pd.DataFrame(sorted(answer["headers"].items()), columns=["header", "value"]),
                     key="detail_answer_headers", hide_index=True, width="stretch")

st.subheader("Probe attempts")
st.dataframe(evidence["attempts"], key="detail_attempts", hide_index=True, width="stretch",
             column_config=shared.headers(evidence["attempts"]))

if finding.get("error_signature"):
    st.subheader("Same cause elsewhere")
    st.caption("Error signature (ids, numbers and quoted values replaced)")
    st.code(finding["error_signature"], language=None, wrap_lines=True)
    same = views.same_signature(findings, model_id, provider)
    if same.empty:
        st.caption("No other target of this run failed with this signature.")
    else:
        st.caption(f"{len(same)} other targets of this run failed the same way. Pick one to open it.")
        picked = st.dataframe(same, key="detail_same_cause", hide_index=True, width="stretch", on_select="rerun",
                              selection_mode="single-row", column_config=shared.headers(same))
        rows = picked.selection.rows if picked else []
        if rows:
            shared.show_detail(str(same.iloc[rows[0]]["model_id"]), str(same.iloc[rows[0]]["provider"]))

facts, mappings = st.columns(2)
with facts:
    st.subheader("Catalog facts")
    st.dataframe(dashboard.catalog_facts(evidence), key="detail_facts", hide_index=True, width="stretch")
with mappings:
    st.subheader("Provider mappings")
    st.dataframe(evidence["mappings"], key="detail_mappings", hide_index=True, width="stretch",
                 column_config=shared.headers(evidence["mappings"]))

st.subheader("History across runs")
streak = {name: finding.get(name) for name in ("consecutive_failures", "first_failed_at", "last_ok_at", "flaps")}
st.dataframe(pd.DataFrame([streak]), key="detail_streak", hide_index=True, width="stretch",
             column_config={"consecutive_failures": "failing runs in a row", "first_failed_at": "failing since",
                            "last_ok_at": "last ok", "flaps": "verdict changes (last 10 runs)"})
st.dataframe(evidence["history"], key="detail_history", hide_index=True, width="stretch",
             column_config=shared.headers(evidence["history"]))

st.subheader("Working alternatives")
if evidence["alternatives"]:
    st.dataframe(pd.DataFrame({"model": evidence["alternatives"]}), key="detail_alternatives", hide_index=True)
else:
    st.caption("None suggested (only blocked models get alternatives).")
