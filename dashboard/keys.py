"""Every ``st.session_state`` key that more than one statement reads or writes, defined once.

A key named here is shared: by several pages (the current dataset and models), by a page and
the shareable URL (the map's models, colour and projection), or by a page and a callback (the
map selection). Widget keys used by a single widget stay beside that widget.
"""

from __future__ import annotations

# -- the session --------------------------------------------------------------------------------
SESSION_ID = "_parallax_session"
DATASET_SPEC = "dataset_spec"  # the dataset every page works on
MODEL_SPECS = "model_specs"  # the models the user picked on the Embed page, in order

# -- shareable URLs (dashboard.links) -----------------------------------------------------------
URL_RESTORED = "_url_restored"
URL_SELECTION = "_url_selection"  # rows from a link, applied by the Map page once it knows N
URL_ERROR = "_url_error"

# -- Home ---------------------------------------------------------------------------------------
HOME_METHOD = "home_method"  # "UMAP" / "PCA"; also restored from a link
HOME_AUTO_UMAP = "home_auto_umap"
HOME_BUNDLE_MODEL = "home_bundle_model"

# -- Embed --------------------------------------------------------------------------------------
EMBED_MODELS = "embed_models"  # the model picker
EMBED_MODELS_ADD = (
    "embed_models_add"  # a typed spec, added before the widget exists (Streamlit rule)
)
EMBED_RESULTS = "embed_results"  # the last run's outcome per model

# -- Map ----------------------------------------------------------------------------------------
MAP_MODELS = "map_models"  # the map labels drawn side by side
MAP_METHOD = "map_method"
MAP_COLOUR = "map_colour"
MAP_ROWS = "map_selected_rows"  # the selection, as dataset rows (int64)
MAP_SELECTION_SOURCE = "map_selection_source"  # which chart (or "link", "compare") made it
MAP_SELECTION_DATASET = "map_selection_dataset"  # the fingerprint the rows belong to
MAP_SELECTION_NONCE = "map_selection_nonce"  # the selection's revision (the maps reapply on change)
MAP_ALIGNED = "map_aligned"  # align every map onto the first (Procrustes)
MAP_DISPLACEMENT = "map_displacement"  # colour by each item's move between the first two maps
MAP_LINK_ZOOM = "map_link_zoom"
MAP_SEARCH = "map_search"  # the last text search: query, model label, scores
MAP_AGREE_A = "map_agree_a"
MAP_AGREE_B = "map_agree_b"
MAP_AGREE_K = "map_agree_k"
MAP_AGREE_GO = "agree_go"  # prefix: agreement asked for on a large dataset
MAP_FILTER = "map_filter_state"  # the Map page's filter: {"dataset": fingerprint, "clauses": [...]}
MAP_SUBSET_APPLIED = "_map_subset_applied"  # (fingerprint, name) of the link's subset, once


def agreement_go(key_a: str, key_b: str, k: int) -> str:
    """The flag set when the user asks for the agreement of two vectors entries at this k."""
    return f"{MAP_AGREE_GO}_{key_a}_{key_b}_{k}"


# -- Compare ------------------------------------------------------------------------------------
CMP_MODELS = "cmp_models"
CMP_DS_MODELS = "cmp_ds_models"
CMP_TEMPLATES = "cmp_templates"
CMP_PRED_RESULT = "cmp_pred_result"
CMP_REPORT = "cmp_report"
CMP_FUSION = "cmp_fusion"  # the last trained heads: dataset, models, results
CMP_DISAGREE_CACHE = "_cmp_disagree_frames"

# -- Data ---------------------------------------------------------------------------------------
DATA_UPLOAD = "data_upload"

# -- Embed --------------------------------------------------------------------------------------
EMBED_DATASET = "embed_dataset"  # the dataset the Embed page's choices were made for
