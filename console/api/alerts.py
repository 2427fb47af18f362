"""(being written: see /work/notes/console-plan.md)"""

from fastapi import APIRouter

router = APIRouter()
