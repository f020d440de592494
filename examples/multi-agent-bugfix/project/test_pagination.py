import unittest

from pagination import page, page_count


class PageCount(unittest.TestCase):
    def test_full_pages(self):
        self.assertEqual(page_count(9, 3), 3)

    def test_a_partly_filled_last_page_counts(self):
        # Bug report: with 10 results at 3 a page, the 10th result is never shown.
        self.assertEqual(page_count(10, 3), 4)

    def test_no_results_no_pages(self):
        self.assertEqual(page_count(0, 5), 0)

    def test_per_page_must_be_positive(self):
        with self.assertRaises(ValueError):
            page_count(3, 0)


class Page(unittest.TestCase):
    def test_last_page_holds_the_rest(self):
        self.assertEqual(page(list(range(10)), 4, 3), [9])

    def test_past_the_end(self):
        with self.assertRaises(IndexError):
            page(list(range(10)), 5, 3)


if __name__ == "__main__":
    unittest.main()
