"""The Python tests' checks: each failed check is printed and counted, and
the test goes on, so one run shows every failure."""


class Checklist:
    def __init__(self):
        self.failures = []

    def __call__(self, cond, what):
        if not cond:
            self.failures.append(what)
            print("FAIL:", what)
        return cond

    def exit_code(self, success):
        print(f"{len(self.failures)} failures" if self.failures else success)
        return 1 if self.failures else 0
