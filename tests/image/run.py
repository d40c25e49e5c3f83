"""`make test-image`: the container image built and run for real, with compose, as a self-hoster runs it.

No image registry is reachable where this runs, so:
1. a Debian bookworm base is made with debootstrap (--variant=minbase, from the Debian mirror this machine's
   apt uses, with python3 and this machine's CA certificates so that pip works), cached in .cache/image/ and
   in podman's store;
2. the image is built from Containerfile with --build-arg BASE_IMAGE=<that base>;
3. a PostgreSQL image is built on the same base from Debian's postgresql package (postgres.Containerfile);
4. compose.yaml runs with compose.test.yaml over it (those images, and the Stripe emulator from the same image
   as a third service); the checks: the image's user, command, health check and contents, /healthz, /readyz,
   the migration, `stripe setup` and one cancel link through to the Stripe portal against the emulator, and
   the app waiting for a database that is down when it starts (and stopping at once on SIGTERM meanwhile);
5. every container, network and volume it made is removed, whatever happened; podman runs no daemon.

Podman comes from Debian's packages (the Makefile installs it) with runc, netavark and a containers.conf of
its own (explicit ulimits: the machine's hard limits can't be raised). Builds use --format docker, which keeps
HEALTHCHECK (the OCI format drops it).
"""

import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import stripe

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "image"
LOGS = CACHE / "logs"
BASE = "localhost/cancel-flow-test-base:bookworm"
APP = "localhost/cancel-flow:test"
POSTGRES = "localhost/cancel-flow-test-postgres:bookworm"
PROJECT = "cancel-flow-image-test"
RECIPE_LABEL = "io.cancel-flow.base-recipe"
DEBOOTSTRAP = ["--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm"]
BASE_ENV = "PIP_CERT=/etc/ssl/certs/ca-certificates.crt"  # pip's own certificate bundle lacks the machine's CAs
STRIPE_KEY = "sk_test_imagecheck"
DEBIAN_SUITES = {"bookworm", "trixie", "forky", "bullseye", "sid", "stable", "testing", "unstable", "oldstable"}

STARTED = time.monotonic()
PASSED: list[str] = []


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def passed(name: str) -> None:
    PASSED.append(name)
    say(f"ok  {name}")


class Failed(Exception):
    pass


def expect(condition: bool, name: str, detail: str = "") -> None:
    if not condition:
        raise Failed(f"{name}: {detail}" if detail else name)
    passed(name)


def run(*command: str, log: str | None = None, check: bool = True, timeout: float = 900,
        capture: bool = False) -> subprocess.CompletedProcess:
    """A command; its output goes to .cache/image/logs/<log>.log (shown when it fails) or is returned."""
    if log:
        LOGS.mkdir(parents=True, exist_ok=True)
        path = LOGS / f"{log}.log"
        with path.open("w") as out:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if check and result.returncode:
            tail = "".join(path.read_text().splitlines(keepends=True)[-40:])
            raise Failed(f"{' '.join(command[:3])} … exited {result.returncode} (log: {path}):\n{tail}")
        return result
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise Failed(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


def podman(*args: str, **kw) -> subprocess.CompletedProcess:
    return run("podman", *args, **kw)


def compose(*args: str, **kw) -> subprocess.CompletedProcess:
    project = CACHE / "project"
    return run("podman-compose", "-p", PROJECT, "-f", str(project / "compose.yaml"),
               "-f", str(project / "compose.test.yaml"), *args, **kw)


# --- podman's configuration -----------------------------------------------------------------------------

def containers_conf() -> Path:
    """runc, netavark, no systemd, and explicit ulimits: podman's defaults ask for more than this machine's hard
    limits, which runc may not raise (seen here: open files above the hard limit, and processes above 32768
    although the hard limit was higher, both refused)."""
    def limit(kind: int, most: int) -> int:
        hard = resource.getrlimit(kind)[1]
        return most if hard == resource.RLIM_INFINITY else min(hard, most)

    nofile, nproc = limit(resource.RLIMIT_NOFILE, 65536), limit(resource.RLIMIT_NPROC, 8192)
    path = CACHE / "containers.conf"
    path.write_text(f"""[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
""")
    return path


# --- the Debian base --------------------------------------------------------------------------------------

def debian_mirror() -> str | None:
    """The Debian mirror this machine's apt uses (its sources lists), or None for debootstrap's default."""
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*.sources"))
    for path in sources:
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, flags=re.MULTILINE))
            if "deb" in fields.get("Types", "").split() and DEBIAN_SUITES & set(fields.get("Suites", "").split()):
                return fields.get("URIs", "").split()[0]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] in DEBIAN_SUITES:
                return words[1]
    return None


def machine_certificates() -> list[Path]:
    folder = Path("/usr/local/share/ca-certificates")
    return sorted(path for path in folder.rglob("*.crt")) if folder.is_dir() else []


def base_image() -> None:
    """The debootstrapped base in podman's store, made again only when its recipe changes."""
    mirror = debian_mirror()
    certificates = machine_certificates()
    recipe = hashlib.sha256(json.dumps({
        "debootstrap": DEBOOTSTRAP, "mirror": mirror, "env": BASE_ENV, "format": 1,
        "certificates": [hashlib.sha256(path.read_bytes()).hexdigest() for path in certificates],
    }).encode()).hexdigest()[:16]
    present = podman("image", "inspect", "--format", "{{index .Labels \"" + RECIPE_LABEL + "\"}}", BASE, check=False)
    if present.returncode == 0 and present.stdout.strip() == recipe:
        say(f"base image {BASE} (cached in podman's store)")
        return
    tarball = CACHE / f"debian-bookworm-{recipe}.tar"
    if not tarball.is_file():
        rootfs = CACHE / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        say(f"debootstrap {' '.join(DEBOOTSTRAP)} from {mirror or 'debootstrap’s default mirror'} …")
        run("debootstrap", *DEBOOTSTRAP, str(rootfs), *([mirror] if mirror else []), log="debootstrap", timeout=1200)
        for path in certificates:
            shutil.copy(path, rootfs / "usr/local/share/ca-certificates" / path.name)
        run("chroot", str(rootfs), "update-ca-certificates", log="update-ca-certificates")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                         "usr/share/info", "usr/share/locale"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file() or entry.is_symlink():
                    entry.unlink()
                elif entry.name != "partial":
                    shutil.rmtree(entry)
        for old in CACHE.glob("debian-bookworm-*.tar"):
            old.unlink()
        run("tar", "--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
            "-C", str(rootfs), "-cf", str(tarball.with_suffix(".part")), ".", log="tar")
        tarball.with_suffix(".part").rename(tarball)
        shutil.rmtree(rootfs)
    else:
        say(f"base image from the cached root file system {tarball.relative_to(ROOT)}")
    podman("import", "--change", f"ENV {BASE_ENV}", "--change", f"LABEL {RECIPE_LABEL}={recipe}",
           "--change", 'CMD ["/bin/bash"]', str(tarball), BASE, log="import")


# --- the images -------------------------------------------------------------------------------------------

def image_id(image: str) -> str | None:
    found = podman("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def build(tag: str, containerfile: Path, context: Path, log: str) -> None:
    """podman build on the host's network (the default bridge may clash with another on this machine); its
    layers stay in podman's store as the next run's cache, and the image this one replaces is removed."""
    before = image_id(tag)
    podman("build", "--network", "host", "--format", "docker", "-f", str(containerfile),
           "--build-arg", f"BASE_IMAGE={BASE}", "-t", tag, str(context), log=log, timeout=1500)
    if before and before != image_id(tag):
        podman("rmi", before, check=False)


def build_images() -> None:
    say("building the image from Containerfile …")
    build(APP, ROOT / "Containerfile", ROOT, "build-app")
    say("building the PostgreSQL image from Debian's postgresql package …")
    build(POSTGRES, HERE / "postgres.Containerfile", HERE, "build-postgres")


def check_image() -> None:
    image = json.loads(podman("image", "inspect", APP, capture=True).stdout)[0]
    config = image["Config"]
    expect(config.get("User") == "cancel-flow", "the image runs as its own user", config.get("User", "root"))
    expect(config.get("Cmd", [])[:2] == ["cancel-flow", "serve"], "its command is cancel-flow serve", str(config.get("Cmd")))
    health = image.get("Healthcheck") or {}
    expect("/healthz" in " ".join(health.get("Test", [])), "its HEALTHCHECK asks /healthz (kept by --format docker)",
           json.dumps(health))
    names = [entry.split("=", 1)[0] for entry in config.get("Env", [])]
    expect(not [name for name in names if re.search("SECRET|PASSWORD|KEY|TOKEN", name)],
           "no secret in the image's environment", str(names))
    inside = podman("run", "--rm", APP, "sh", "-c",
                    "id -u; ls -A /app; test -e /src && echo /src; ls /opt/cancel-flow/bin | grep -x pip; "
                    "touch /app/x 2>/dev/null && echo writable; true", capture=True).stdout.split()
    expect(inside[0] != "0" and inside[1:] == ["offers.toml", "static"],
           "non-root, and /app holds only offers.toml and static/ (no .env, no sources, no pip, read-only)",
           " ".join(inside))
    history = json.loads(podman("history", "--format", "json", APP, capture=True).stdout)
    venv_bytes = max((layer.get("size", 0) for layer in history if "COPY dir" in layer.get("CreatedBy", "")), default=0)
    say(f"image {APP}: {image['Size'] / 1e6:.0f} MB: the base {podman_size(BASE) / 1e6:.0f} MB, "
        f"the virtual environment {venv_bytes / 1e6:.0f} MB")
    expect(0 < venv_bytes < 250e6, "the virtual environment layer stays small (under 250 MB)", f"{venv_bytes} bytes")


def podman_size(image: str) -> int:
    return json.loads(podman("image", "inspect", image, capture=True).stdout)[0]["Size"]


# --- the stack --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_project(app_port: int, stripe_port: int) -> dict[str, str]:
    """compose.yaml and the override in a folder of their own, with a .env made from .env.example (so that
    neither the checkout's own .env nor a developer's settings get in)."""
    project = CACHE / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    shutil.copy(ROOT / "compose.yaml", project / "compose.yaml")
    shutil.copy(HERE / "compose.test.yaml", project / "compose.test.yaml")
    settings = {
        "CANCEL_FLOW_SECRET_KEY": secrets.token_urlsafe(48),
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "CANCEL_FLOW_BASE_URL": f"http://127.0.0.1:{app_port}",
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_API_BASE": "http://stripe:12111",
        "CANCEL_FLOW_PUBLISH": f"127.0.0.1:{app_port}",
        "TEST_STRIPE_PUBLISH": f"127.0.0.1:{stripe_port}",
    }
    lines, given = [], set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if not line.startswith("#") and key in settings:  # the example's own lines, filled in
            line = f"{key}={settings[key]}"
            given.add(key)
        lines.append(line)
    lines += [f"{key}={value}" for key, value in settings.items() if key not in given]
    (project / ".env").write_text("\n".join(lines) + "\n")
    return settings


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def logs(service: str) -> str:
    result = podman("logs", container(service), check=False)
    return result.stdout + result.stderr


def events(service: str, name: str) -> list[dict]:
    found = []
    for line in logs(service).splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                found.append(event)
    return found


def wait_until(what: str, probe, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
            if value:
                return value
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def answers(url: str, status: int = 200):
    return lambda: (response := httpx.get(url, timeout=5)).status_code == status and response


def check_stack(settings: dict[str, str], app_url: str, stripe_url: str) -> None:
    say("compose up …")
    compose("up", "-d", "--no-build", log="compose-up", timeout=300)
    running = podman("ps", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "{{.Names}}",
                     capture=True).stdout.split()
    expect(sorted(running) == sorted(container(service) for service in ("db", "app", "stripe")),
           "compose up starts the database, the app and the emulator", f"running: {running} "
           f"(log: {LOGS / 'compose-up.log'})")
    wait_until("/healthz", answers(f"{app_url}/healthz"), timeout=180)
    passed("/healthz answers 200 through the published port")
    ready = wait_until("/readyz", answers(f"{app_url}/readyz"), timeout=60).json()
    expect(ready == {"status": "ok", "database": "ok", "config": "loaded"}, "/readyz: database ok, configuration loaded",
           json.dumps(ready))

    head = alembic_head()
    version = psql("SELECT version_num FROM alembic_version").split()
    tables = int(psql("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"))
    expect(version == [head] and tables > 5, f"serve migrated PostgreSQL to the head revision {head}",
           f"alembic_version {version}, {tables} tables")

    health = podman("healthcheck", "run", container("app"), check=False)
    expect(health.returncode == 0, "the image's HEALTHCHECK passes in the running container",
           health.stdout + health.stderr)

    setup = podman("exec", container("app"), "cancel-flow", "stripe", "setup", check=False)
    expect(setup.returncode == 0 and "STRIPE_PORTAL_CONFIGURATION=bpc_" in setup.stdout,
           "cancel-flow stripe setup runs in the container against the emulator", setup.stderr[-1000:])

    sdk = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": stripe_url}, max_network_retries=0,
                              http_client=stripe.HTTPXClient(allow_sync_methods=True, timeout=10))
    product = sdk.v1.products.create(params={"name": "Coaching Plan"})
    price = sdk.v1.prices.create(params={"product": product.id, "unit_amount": 4900, "currency": "usd",
                                         "recurring": {"interval": "month"}})
    customer = sdk.v1.customers.create(params={"email": "casey@example.com", "name": "Casey Client",
                                               "payment_method": "pm_card_visa",
                                               "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    sdk.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    minted = podman("exec", container("app"), "cancel-flow", "link", "--customer", customer.id, capture=True).stdout
    match = re.search(r"Cancel link:\s+(\S+)", minted)
    expect(bool(match) and match.group(1).startswith(f"{app_url}/cancel/"),
           "cancel-flow link mints a cancel link on CANCEL_FLOW_BASE_URL", minted)
    link = match.group(1)

    with httpx.Client(timeout=15, follow_redirects=False) as browser:
        page = browser.get(link)
        expect(page.status_code == 200 and "Coaching Plan" in page.text and "Continue to cancel" in page.text,
               "the cancel link's page names the plan and offers Continue to cancel", f"{page.status_code}")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        token = link.rsplit("/", 1)[1]
        before = len(httpx.get(f"{stripe_url}/_emulator/requests").json())
        to_portal = browser.post(f"{app_url}/cancel/{token}/cancel", data={"csrf_token": csrf})
        asked = [request["path"] for request in httpx.get(f"{stripe_url}/_emulator/requests").json()[before:]]
        expect(to_portal.status_code == 303 and "/v1/billing_portal/sessions" in asked,
               "Continue to cancel opens a Stripe portal session (303 to it)",
               f"{to_portal.status_code} {to_portal.headers.get('location')} {asked}")

    sessions = psql("SELECT count(*) FROM cancel_session")
    expect(sessions == "1", "the visit is recorded in PostgreSQL (one cancel session)", sessions)

    say("the app started while its database is down …")
    waiting_before, ready_before = len(events("app", "database.waiting")), len(events("app", "database.ready"))
    podman("stop", "--time", "30", container("app"), log="stop-app")  # while it can still reach the database
    podman("stop", "--time", "20", container("db"), log="stop-db")
    podman("start", container("app"), log="start-app")
    wait_until("a database.waiting line", lambda: len(events("app", "database.waiting")) > waiting_before, timeout=60)
    line = events("app", "database.waiting")[-1]
    expect(line["database"] == "postgresql+psycopg://cancel_flow:***@db:5432/cancel_flow" and line["gives_up_in_s"] > 0,
           "the app waits for the database, one database.waiting line per try (password hidden)", json.dumps(line))
    began = time.monotonic()
    podman("stop", "--time", "30", container("app"), log="stop-app")
    took = time.monotonic() - began
    expect(took < 10, "while it waits, the app stops at once on SIGTERM (as the container's first process)",
           f"podman stop took {took:.0f} s")
    waiting_before = len(events("app", "database.waiting"))
    podman("start", container("app"), log="start-app")
    wait_until("a database.waiting line", lambda: len(events("app", "database.waiting")) > waiting_before, timeout=60)
    podman("start", container("db"), log="start-db")
    # a name lookup under way while podman adds the database back to its DNS may take 40 s to fail (seen here)
    wait_until("a database.ready line", lambda: len(events("app", "database.ready")) > ready_before, timeout=150)
    wait_until("/readyz after the wait", answers(f"{app_url}/readyz"), timeout=90)
    again = httpx.get(link, timeout=15)
    expect(again.status_code == 200 and psql("SELECT count(*) FROM cancel_session") == "1",
           "once the database is up the link answers again, its session kept in the named volume",
           str(again.status_code))

    everything = logs("app") + logs("db")
    expect(settings["POSTGRES_PASSWORD"] not in everything and settings["CANCEL_FLOW_SECRET_KEY"] not in everything,
           "neither the database password nor the secret key reach the logs")


def psql(query: str) -> str:
    return podman("exec", "--user", "postgres", container("db"), "psql", "-U", "cancel_flow", "-d", "cancel_flow",
                  "-tAc", query, capture=True).stdout.strip()


def alembic_head() -> str:
    from alembic.script import ScriptDirectory

    from cancel_flow.store import MIGRATIONS

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def tear_down() -> list[str]:
    """Remove the project's containers, network and volume; returns what is still there (nothing, normally)."""
    if (CACHE / "project" / "compose.yaml").is_file():
        compose("down", "-v", log="compose-down", check=False, timeout=300)
    label = f"label=io.podman.compose.project={PROJECT}"
    for kind, listing in (("container", ["ps", "-a", "-q", "--filter", label]),
                          ("volume", ["volume", "ls", "-q", "--filter", label])):
        for name in podman(*listing, check=False).stdout.split():
            podman(kind, "rm", "-f", name, check=False)
    podman("network", "rm", "-f", f"{PROJECT}_default", check=False)
    left = podman("ps", "-a", "-q", "--filter", label, check=False).stdout.split()
    left += podman("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
    left += [name for name in podman("network", "ls", "--format", "{{.Name}}", check=False).stdout.split()
             if name.startswith(PROJECT)]
    return left


def main() -> int:
    if os.geteuid() != 0:
        print("make test-image needs root (debootstrap, rootful podman)", file=sys.stderr)
        return 2
    CACHE.mkdir(parents=True, exist_ok=True)
    os.environ["CONTAINERS_CONF"] = str(containers_conf())
    failure = None
    try:
        tear_down()  # what an interrupted run may have left
        base_image()
        build_images()
        check_image()
        app_port, stripe_port = free_port(), free_port()
        settings = write_project(app_port, stripe_port)
        check_stack(settings, f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{stripe_port}")
    except (Failed, subprocess.TimeoutExpired, httpx.HTTPError, stripe.StripeError) as error:
        failure = error
        for service in ("app", "db", "stripe"):
            if podman("container", "exists", container(service), check=False).returncode:
                continue
            text = logs(service).strip()
            if text:
                print(f"--- last lines of {service}'s log:\n" + "\n".join(text.splitlines()[-25:]), file=sys.stderr)
    finally:
        for service in ("app", "db", "stripe"):  # kept for a look afterwards
            if podman("container", "exists", container(service), check=False).returncode == 0:
                (LOGS / f"{service}.log").write_text(logs(service))
        say("removing the containers, network and volume …")
        left = tear_down()
    if left:
        print(f"test-image: left behind: {left}", file=sys.stderr)
        failure = failure or Failed("containers, volumes or networks were left behind")
    if failure:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(f"test-image in {time.monotonic() - STARTED:.0f} s")
    print(f"test-image: {len(PASSED)} passed, {1 if failure else 0} failed")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
