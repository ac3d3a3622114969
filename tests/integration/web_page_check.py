#!/usr/bin/env python3
"""backupd's status page in a real headless browser (Chromium from Debian, driven by Selenium).

Loads the page once and then only watches it, never reloading:
  1. it renders a card for every expected volume (--volume, repeatable) and says "ready";
  2. the copy named --copy of the first volume shows "... behind" at some point and later
     "current" again (web_test.cc makes that happen by stopping and resuming a replicator);
  3. with --screenshots DIR, it saves a laptop and a phone view of the page at the end.
Prints one line per step (the test waits on them) and exits 0 only if every step happened within
--timeout seconds; otherwise 1, with the page's text.
"""
import argparse
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def say(text):
    print(text, flush=True)


def copy_text(driver, volume, copy):
    """The lag text of one copy's row in the volume's card, or None if not there. Read in one
    script: the page replaces its cards at every update, so elements found earlier go stale."""
    return driver.execute_script("""
        const [volume, copy] = arguments;
        const card = [...document.querySelectorAll("section.card")]
            .find(c => c.dataset.volume === volume);
        if (!card) return null;
        const row = [...card.querySelectorAll(".copy")]
            .find(r => r.querySelector(".name").textContent === copy);
        return row ? row.querySelector(".lag").textContent : null;""", volume, copy)


def shown_volumes(driver):
    return set(driver.execute_script(
        "return [...document.querySelectorAll('section.card')].map(c => c.dataset.volume)"))


def updates(driver):
    return int(driver.execute_script("return document.body.dataset.updates"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--volume", action="append", required=True, help="HOST:PATH")
    ap.add_argument("--copy", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--screenshots")
    args = ap.parse_args()

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,900"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    deadline = time.monotonic() + args.timeout
    try:
        driver.get(args.url)
        while time.monotonic() < deadline:
            shown = shown_volumes(driver)
            if updates(driver) >= 1 and set(args.volume) <= shown:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError("the page never showed every volume")
        say("ready: %d volume card(s)" % len(shown))
        loads = driver.execute_script("return performance.getEntriesByType('navigation').length")

        seen_behind = None
        while time.monotonic() < deadline:
            text = copy_text(driver, args.volume[0], args.copy)
            if seen_behind is None and text and text.endswith("behind"):
                seen_behind = text
                say("behind: " + text)
            elif seen_behind is not None and text == "current":
                say("current again")
                break
            time.sleep(0.2)
        else:
            raise TimeoutError("copy %s never went behind and back (last: %r)"
                               % (args.copy, copy_text(driver, args.volume[0], args.copy)))
        count = updates(driver)
        same_load = driver.execute_script(
            "return performance.getEntriesByType('navigation').length") == loads
        if not same_load:
            raise RuntimeError("the page was reloaded")
        say("updated %d times in one load" % count)

        if args.screenshots:
            driver.save_screenshot(args.screenshots + "/status-page.png")
            driver.set_window_size(390, 844)
            time.sleep(0.5)
            driver.save_screenshot(args.screenshots + "/status-page-phone.png")
            say("screenshots in " + args.screenshots)
        return 0
    except Exception as e:  # the test prints this log on failure
        say("FAILED: %s" % e)
        try:
            say(driver.find_element(By.TAG_NAME, "body").text)
        except Exception:
            pass
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
