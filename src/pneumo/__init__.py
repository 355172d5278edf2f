"""pneumo: pediatric chest X-ray classification into normal, bacterial and viral pneumonia.

Research software, not a diagnostic device.
"""

__version__ = "0.1.0"

DISCLAIMER = "Research software, not a diagnostic device: do not use for clinical decisions."
