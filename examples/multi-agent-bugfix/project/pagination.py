"""Splitting a list of search results into pages."""


def page_count(total_items, per_page):
    """How many pages `total_items` results fill at `per_page` results a page."""
    if per_page < 1:
        raise ValueError("per_page must be at least 1")
    return total_items // per_page


def page(items, number, per_page):
    """The results on page `number` (1-based)."""
    if not 1 <= number <= max(page_count(len(items), per_page), 1):
        raise IndexError(f"no page {number}")
    start = (number - 1) * per_page
    return items[start:start + per_page]
