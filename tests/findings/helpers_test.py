"""The findings suite's statistics and verdicts (bench/findings/findings.py),
and its plots being well-formed SVG."""
import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "findings"))
import findings  # noqa: E402
import svg_chart  # noqa: E402


class Statistics(unittest.TestCase):
    def test_ranks_and_spearman(self):
        self.assertEqual(findings.ranks([5, 5, 1]), [2.5, 2.5, 1.0])
        self.assertAlmostEqual(findings.spearman([1, 2, 3], [10, 20, 30]), 1.0)
        self.assertAlmostEqual(findings.spearman([1, 2, 3], [3, 2, 1]), -1.0)
        self.assertAlmostEqual(findings.spearman([1, 2, 3, 4], [2, 1, 4, 3]), 0.6)

    def test_stats_and_separation(self):
        s = findings.stats([1.0, 2.0, 3.0])
        self.assertEqual((s["mean"], s["min"], s["max"], s["n"]), (2.0, 1.0, 3.0, 3))
        self.assertAlmostEqual(s["sd"], 1.0)
        self.assertEqual(findings.stats([4.0])["sd"], 0.0)
        self.assertTrue(findings.separated(findings.stats([1, 2]), findings.stats([3, 4])))
        self.assertFalse(findings.separated(findings.stats([1, 3]), findings.stats([2, 4])))

    def test_lowest_skips_excluded_and_sorts(self):
        self.assertEqual(findings.lowest([5, 1, 4, 0], 2), [1, 3])
        self.assertEqual(findings.lowest([5, 1, 4, 0], 2, exclude=(3,)), [1, 2])


class Verdicts(unittest.TestCase):
    def test_lower_than(self):
        v = findings.lower_than("a", "b", "a vs b")
        self.assertEqual(v({"a": [1, 1.1, 1.2], "b": [2, 2.1, 2.2]})[0], "holds")
        self.assertEqual(v({"a": [1, 2.5, 1.2], "b": [2, 2.1, 2.2]})[0], "inconclusive")
        self.assertEqual(v({"a": [3, 3.1, 3.2], "b": [2, 2.1, 2.2]})[0], "does not hold here")

    def test_compare_lower(self):
        arms = {"x": [1, 1.1], "y": [2, 2.1], "z": [3, 3.3]}
        self.assertEqual(findings.compare_lower(arms, "x", list(arms), "ppl")[0], "holds")
        self.assertEqual(findings.compare_lower(arms, "y", list(arms), "ppl")[0], "does not hold here")
        arms["y"] = [0.9, 1.2]
        self.assertEqual(findings.compare_lower(arms, "x", list(arms), "ppl")[0], "inconclusive")

    def test_rerank_and_llm_drop(self):
        self.assertEqual(findings.verdict_rerank({"spearman": [0.2, 0.5], "zero_shot_best": [0, 1],
                                                  "kd_best": [2, 1]})[0], "holds")
        self.assertEqual(findings.verdict_rerank({"spearman": [0.9, 1.0], "zero_shot_best": [0, 1],
                                                  "kd_best": [0, 1]})[0], "does not hold here")
        m = {"teacher_ppl": [10, 10], "ppl_attention_2": [11, 11], "ppl_mlp_2": [20, 20],
             "ppl_attention_4": [12, 12], "ppl_mlp_4": [30, 30]}
        self.assertEqual(findings.verdict_llm_drop(m)[0], "holds")
        m["ppl_attention_4"] = [25, 25]
        self.assertEqual(findings.verdict_llm_drop(m)[0], "does not hold here")

    def test_shortgpt_needs_both_parts(self):
        m = {"layers": [8, 8], "bi_layers": [[5, 6], [5, 6]], "bi_in_late_middle": [True, True],
             "ppl_block_influence": [10, 10.1], "ppl_lm_loss": [12, 12.1], "ppl_magnitude_l1": [13, 13],
             "ppl_reverse_order": [14, 14], "ppl_random": [15, 16]}
        self.assertEqual(findings.verdict_shortgpt(m)[0], "holds")
        m["bi_in_late_middle"] = [False, False]  # the lowest-BI blocks are early: the location part fails
        self.assertEqual(findings.verdict_shortgpt(m)[0], "does not hold here")

    def test_every_claim_is_complete(self):
        for name, spec in findings.CLAIMS.items():
            for key in ("paper", "fn", "verdict", "claim", "ylabel"):
                self.assertIn(key, spec, name)
        self.assertTrue(set(findings.DEPTH_CLAIMS) <= set(findings.CLAIMS))


class Plot(unittest.TestCase):
    def test_bars_are_well_formed_svg(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.svg")
            svg_chart.bars(path, "a <title> & more", "ppl", [("one", [1.0, 2.0]), ("two", [3.0]), ("none", [])])
            root = ET.parse(path).getroot()
            self.assertTrue(root.tag.endswith("svg"))
            rects = [e for e in root.iter() if e.tag.endswith("rect")]
            self.assertEqual(len(rects), 3)  # the background and one bar per arm with values


if __name__ == "__main__":
    unittest.main()
