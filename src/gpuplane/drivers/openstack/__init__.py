"""The OpenStack driver: gpuplane's inventory in an operator's Placement (docs/openstack.md).

- ``placement.py``: a thin httpx client of the Placement REST API (typed, counts its writes);
- ``tree.py``: pure mapping of gpuplane hosts to provider trees and back (import);
- ``plan.py``: pure comparison of desired and observed trees (the changes a sync makes);
- ``sync.py``: observe Placement, plan, apply with the fewest writes; ``check`` only observes.
"""
