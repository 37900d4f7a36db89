"""Attention heads and MLP neurons: screening, patching, circuits (OV/QK) and neuron ablation."""
