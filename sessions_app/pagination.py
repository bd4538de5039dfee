"""The REST API's pagination (its own module: DRF imports it while building its generic views,
so it must not import them)."""

from django.conf import settings
from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=`; a limit above API_MAX_PAGE_SIZE is cut to it, so no request can ask
    for a whole table in one response."""

    @property
    def max_limit(self) -> int:
        return settings.API_MAX_PAGE_SIZE
