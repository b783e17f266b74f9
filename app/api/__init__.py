"""Management REST routes, one module per resource."""

from fastapi import APIRouter

from app.api import avatars, health, kbs, sessions, teachers, tutors, webrtc
from app.api.common import ERRORS
from app.deps import ApiKey

router = APIRouter()
router.include_router(health.router)
router.include_router(sessions.router, dependencies=[ApiKey], responses=ERRORS)
router.include_router(tutors.router, dependencies=[ApiKey], responses=ERRORS)
router.include_router(teachers.router, dependencies=[ApiKey], responses=ERRORS)
router.include_router(kbs.router, dependencies=[ApiKey], responses=ERRORS)
router.include_router(avatars.router, dependencies=[ApiKey], responses=ERRORS)
router.include_router(webrtc.router, dependencies=[ApiKey], responses=ERRORS)
