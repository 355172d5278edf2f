"""Fitting what turns a trained network into a decision: temperature, operating points with a stated
guarantee, conformal class sets, site calibration, and the one function that writes a refitted bundle."""
