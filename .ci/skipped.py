"""Print the tests a pytest run skipped, and why, from its JUnit XML: the last lines of the CI log.

Usage: python3 .ci/skipped.py JUNIT.xml
"""

import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
skipped = []
for case in root.iter("testcase"):
    for mark in case.findall("skipped"):
        name = f"{case.get('classname')}::{case.get('name')}"
        skipped.append(f"  {name}: {mark.get('message', '').strip()}")
ran = sum(1 for _ in root.iter("testcase"))
print(f"tests skipped: {len(skipped)} of {ran}" + ("" if skipped else " (none)"))
print("\n".join(skipped))
