"""Event contracts: what shops, suppliers and agents exchange. Imports none of ours."""
