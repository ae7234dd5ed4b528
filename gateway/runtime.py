"""What the servicers share in one gateway process: the store, the event hub,
admission, the artifact store, settings and limits."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.artifacts import ArtifactStore
from conveyor.settings import Settings
from conveyor.store.job_store import JobStore
from gateway.admission import Admission
from gateway.event_hub import EventHub
from gateway.janitor import Janitor
from gateway.kind_catalog import KindCatalog
from gateway.validation import Limits


@dataclass
class GatewayRuntime:
    settings: Settings
    store: JobStore
    hub: EventHub
    admission: Admission
    artifacts: ArtifactStore
    janitor: Janitor
    limits: Limits
    kinds: KindCatalog
