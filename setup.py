"""Two source roots: daemon/ holds the package tabfleetd, ctl/ holds tabfleetctl.

daemon/ itself is never a package: `daemon` is python-daemon's import name.
"""

from setuptools import setup

setup(
    package_dir={
        "tabfleetd": "daemon/tabfleetd",
        "tabfleetctl": "ctl/tabfleetctl",
    },
    packages=["tabfleetd", "tabfleetd.files", "tabfleetd.demo", "tabfleetd.sites", "tabfleetd.settings", "tabfleetd.fleet", "tabfleetd.store", "tabfleetd.schedule", "tabfleetd.control", "tabfleetd.web", "tabfleetd.service", "tabfleetctl"],
)
