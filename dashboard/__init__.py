"""VRF lab's Streamlit dashboard: reads run bundles, never runs a model."""
