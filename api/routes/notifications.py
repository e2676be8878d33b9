"""Quality notifications (issue 19): each party's inbox and one thread with its history.

Transitions are not posted here: each is a signed record of kind ``notification`` submitted to
``POST /v1/records`` like any evidence, where intake runs the notification state machine in the
record's transaction (refusals: 409 with a ``notification_*`` code, docs/api.md). What this
router serves is the read side, scoped to the token's organisation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from api import notification_views as views
from api.deps import Ctx, CurrentUser
from api.errors import problems
from ledger.records import ID_MAX_LENGTH, ID_PATTERN, NotificationTransition

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])

NotificationId = Annotated[str, Path(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]
MAX_OFFSET = 2**31 - 1


class NotificationSummary(BaseModel):
    notificationId: str
    type: Literal["investigation", "alert"]
    sender: str
    recipient: str
    originId: str | None
    depth: int = Field(description="0 for an original, 1 for a forward to the next tier, ...")
    state: NotificationTransition
    severity: str | None
    deadline: int | None = Field(description="answer due by (unix time, the sender's ask)")
    overdue: bool = Field(
        description="no answer anchored by the deadline (chain time; the service clock while "
        "no answer is anchored)"
    )
    answered: bool
    createdAt: int | None = Field(description="chain time the created record was anchored")
    updatedAt: int | None
    acknowledgementSeconds: int | None = Field(description="acknowledged - sent, chain time")
    answerSeconds: int | None = Field(description="accepted/declined - sent, chain time")


class InboxItem(NotificationSummary):
    direction: Literal["received", "sent"]


class Inbox(BaseModel):
    notifications: list[InboxItem]
    limit: int
    offset: int


class HistoryEntry(BaseModel):
    seq: int
    transition: NotificationTransition
    signerOrg: str
    signer: str
    structHash: str
    signedAt: int = Field(description="what the signer wrote; not used for any measure")
    anchoredAt: int | None = Field(description="chain time: the anchoring block's timestamp")
    status: Literal["pending", "anchored"]
    reason: str | None
    links: dict[str, Any] | None
    signed: dict[str, Any] = Field(description="the signed record, as submitted")
    receipt: dict[str, Any] | None = Field(description="verifies offline: qledger verify")


class Links(BaseModel):
    incidentId: str | None = Field(description="the incident: GET /v1/incidents/{incidentId}")
    complaints: list[str]
    correctiveActions: list[str] = Field(description="struct hashes of the answering 8D records")


class ThreadView(NotificationSummary):
    description: str
    affectedParts: list[dict[str, Any]]
    scope: dict[str, Any] | None
    links: Links
    history: list[HistoryEntry]
    forwards: list[ThreadView] = Field(
        default_factory=list, description="forwards to the next tier, each with its history"
    )


class Thread(ThreadView):
    origin: NotificationSummary | None = Field(
        None, description="what this forwards, for the parties of that notification"
    )
    forwardsTruncated: bool = False


@router.get("", response_model=Inbox, responses=problems(401))
def list_notifications(
    ctx: Ctx,
    user: CurrentUser,
    box: views.Box = "all",
    state: NotificationTransition | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """The inbox of the token's organisation: notifications it received and sent (``box``),
    newest first, with state, deadline and overdue flag."""
    return views.inbox(ctx, user, box=box, state=state, limit=limit, offset=offset)


@router.get("/{notification_id}", response_model=Thread, responses=problems(401, 404))
def get_notification(notification_id: NotificationId, ctx: Ctx, user: CurrentUser) -> Any:
    """One notification with its full history (every transition's signed record, chain time
    and receipt) and its forwards to other tiers. Readable by its parties and by the parties
    of any notification it forwards; 404 ``notification_not_found`` otherwise."""
    return views.thread(ctx, user, notification_id)
