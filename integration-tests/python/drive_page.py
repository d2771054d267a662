#!/usr/bin/env python3
"""Drives a hub's web page in a real headless Chromium over the Chrome
DevTools protocol, as an operator would use it: waits until the page lists
the hubs and a function, moves the function to another
hub with the page's "move to" menu, and waits until the page shows the move
done. Then moves OTHER to OTHER_HUB through the API, not the page, and
waits until the page shows that move too (seen on the cluster's function
list), and takes a screenshot. Prints what it saw as JSON.

Usage: drive_page.py URL FUNCTION TARGET_HUB HUBS SCREENSHOT OTHER OTHER_HUB

Run it inside a network namespace the test made (Chromium is told not to
phone home, and the namespace makes sure nothing could leave).
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import websocket  # websocket-client

PATIENCE = 90.0


class Browser:
    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="ferry-page-")
        self.process = subprocess.Popen(
            [
                shutil.which("chromium") or "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
                "--metrics-recording-only",
                "--window-size=1280,860",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.time() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(target for target in pages if target["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], suppress_origin=True, timeout=60)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, what: str, expression: str, every: float = 0.1):
        deadline = time.time() + PATIENCE
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(every)
        raise RuntimeError(f"the page never showed {what}: {self.evaluate('document.body.innerText')}")

    def screenshot(self, path: str) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as file:
            file.write(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self.process.kill()
            self.process.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


def main() -> None:
    url, function, target, hubs, screenshot, other, other_hub = sys.argv[1:8]
    hubs = int(hubs)
    browser = Browser()
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=url)
        row = f'tr[data-function="{function}"]'
        browser.wait_for(
            f"{hubs} hubs and the function {function}",
            f"document.querySelectorAll('#hubs tbody tr').length >= {hubs}"
            f" && document.querySelector('{row}') !== null",
        )
        listed_hubs = browser.evaluate(
            "JSON.stringify([...document.querySelectorAll('#hubs tbody tr')].map(r => r.dataset.hub))"
        )
        listed_functions = browser.evaluate(
            "JSON.stringify([...document.querySelectorAll('#functions tbody tr')]"
            ".map(r => [r.dataset.function, r.children[1].innerText, r.children[2].innerText]))"
        )
        browser.evaluate(
            f"""(() => {{
                const select = document.querySelector('select.move[data-name="{function}"]');
                select.value = "{target}";
                select.dispatchEvent(new Event('change', {{ bubbles: true }}));
                return true;
            }})()"""
        )
        saw_moving = bool(
            browser.wait_for(
                "the move under way or done",
                f"(document.querySelector('.move-line[data-function=\"{function}\"]') || {{}}).innerText || ''",
                every=0.02,
            ).startswith("moving")
        )
        moved = browser.wait_for(
            "the move done",
            f"(() => {{ const line = (document.querySelector('.move-line[data-function=\"{function}\"]') || {{}}).innerText || '';"
            " return line.startsWith('moved') || line.includes('failed') ? line : ''; })()",
        )
        hub_after = browser.wait_for(
            f"{function} on {target} in the functions table",
            f"(() => {{ const row = document.querySelector('{row}');"
            f" return row && row.children[2].innerText === '{target}' ? row.children[2].innerText : ''; }})()",
        )
        # A move the page did not start: it learns of it from the hubs.
        moving_elsewhere = threading.Thread(
            target=lambda: urllib.request.urlopen(
                urllib.request.Request(
                    f"{url}v1/functions/{other}/migrate?to={other_hub}", method="POST", data=b""
                ),
                timeout=PATIENCE,
            ).read()
        )
        moving_elsewhere.start()
        moved_elsewhere = browser.wait_for(
            "the move started elsewhere, done",
            f"(() => {{ const line = (document.querySelector('.move-line[data-function=\"{other}\"]') || {{}}).innerText || '';"
            " return line.startsWith('moved') && line.includes('downtime') ? line : ''; })()",
        )
        moving_elsewhere.join()
        browser.screenshot(screenshot)
        print(
            json.dumps(
                {
                    "hubs": json.loads(listed_hubs),
                    "functions": json.loads(listed_functions),
                    "saw_moving": saw_moving,
                    "moved": moved,
                    "hub_after": hub_after,
                    "moved_elsewhere": moved_elsewhere,
                }
            )
        )
    finally:
        browser.close()


if __name__ == "__main__":
    main()
