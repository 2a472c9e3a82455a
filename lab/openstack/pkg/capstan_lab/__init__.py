"""Capstan's OpenStack lab helpers (installed into the lab venv by lab/openstack-up)."""
