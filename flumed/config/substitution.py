"""`${...}` in configuration values, resolved as Flume 1.10 resolves them.

Called by `config/loader.py` on every loaded document (TOML or properties), before any
component parses its keys, so a substituted port is checked as a port. Forms:

- `${env:NAME}`: the environment variable NAME.
- `${sys:NAME}`: the "system property" NAME, from `-DNAME=value` arguments of
  `flumed agent` / `flumed validate` (Flume's `-D` Java options).
- `${NAME}`: a plain `NAME = value` line of the same properties file (TOML: the
  `[vars]` table), else the environment variable NAME (Flume's deprecated
  `EnvVarResolverProperties` behaviour).
- `${f1['KEY']}` (also `${f1["KEY"]}`, `${f1[KEY]}`): config filter `f1` of the agent,
  declared by `a1.configfilters = f1` and `a1.configfilters.f1.type = env | external |
  hadoop` (or Flume's class names for them).
- `$${` is a literal `${`.

A variable that cannot be resolved is an error naming the file, agent, key and variable.
A resolved value is a `Resolved` string that remembers its source text: error messages
show `${env:NAME}`, never the secret (see `shown()`). `flumed convert` does not call this
module, so its output keeps the `${...}` text.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flumed.errors import ConfigError

_VAR = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_FILTER_REF = re.compile(r"^([-\w]+)\[(['\"]?)([-_a-zA-Z0-9]+)\2\]$")
_EXTERNAL_TIMEOUT = 30.0

_FILTER_TYPES = {
    "env": "env",
    "external": "external",
    "hadoop": "hadoop",
    "org.apache.flume.configfilter.environmentvariableconfigfilter": "env",
    "org.apache.flume.configfilter.externalprocessconfigfilter": "external",
    "org.apache.flume.configfilter.hadoopcredentialstoreconfigfilter": "hadoop",
}
_FILTER_KEYS = {
    "env": {"type"},
    "external": {"type", "command", "charset"},
    "hadoop": {
        "type",
        "credential.provider.path",
        "credstore.java-keystore-provider.password-file",
    },
}


class Resolved(str):
    """A configuration value that held `${...}`: `source` is the text as written."""

    source: str

    def __new__(cls, value: str, source: str) -> Resolved:
        obj = super().__new__(cls, value)
        obj.source = source
        return obj


def shown(value: Any) -> str:
    """A value as an error message may show it: substituted text stays hidden."""
    if isinstance(value, Resolved):
        return f"{value.source!r} (substituted value not shown)"
    return repr(value)


class _Unresolved(Exception):
    pass


@dataclass
class _Filter:
    name: str
    kind: str
    conf: dict[str, str]
    _store: dict[str, str] | None = None

    def lookup(self, key: str) -> str:
        if self.kind == "env":
            if key not in os.environ:
                raise _Unresolved(f"config filter {self.name} (env): variable {key} is not set")
            return os.environ[key]
        if self.kind == "external":
            return self._external(key)
        return self._hadoop(key)

    def _external(self, key: str) -> str:
        """Flume's ExternalProcessConfigFilter: `<command> <key>`, first line of stdout."""
        argv = [*self.conf["command"].split(), key]
        charset = self.conf.get("charset", "UTF-8")
        try:
            p = subprocess.run(argv, capture_output=True, timeout=_EXTERNAL_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise _Unresolved(f"config filter {self.name}: cannot run {argv[0]!r}: {e}") from None
        if p.returncode != 0:
            raise _Unresolved(
                f"config filter {self.name}: {argv[0]!r} exited with status {p.returncode} "
                f"for key {key}"
            )
        try:
            out = p.stdout.decode(charset)
        except (LookupError, UnicodeDecodeError) as e:
            raise _Unresolved(f"config filter {self.name}: output not {charset}: {e}") from None
        lines = out.splitlines()
        if not lines:
            raise _Unresolved(f"config filter {self.name}: {argv[0]!r} printed nothing for {key}")
        return lines[0]

    def _hadoop(self, key: str) -> str:
        """A Hadoop credential store (JCEKS): aliases are secret-key entries."""
        if self._store is None:
            self._store = _read_credential_store(self.name, self.conf)
        value = self._store.get(key, self._store.get(key.lower()))
        if value is None:
            raise _Unresolved(
                f"config filter {self.name}: alias {key} is not in the credential store"
            )
        return value


def _read_credential_store(name: str, conf: Mapping[str, str]) -> dict[str, str]:
    from flumed.keystores import KeystoreError, read_secret_keys

    provider = conf.get("credential.provider.path", "")
    m = re.match(r"^(?:local)?jceks://file(/.*)$", provider)
    if m is None:
        raise _Unresolved(
            f"config filter {name}: key 'credential.provider.path': expected "
            f"jceks://file/PATH or localjceks://file/PATH, got {provider!r}"
        )
    password = os.environ.get("HADOOP_CREDSTORE_PASSWORD", "none")
    pwfile = conf.get("credstore.java-keystore-provider.password-file")
    if pwfile:
        try:
            password = Path(pwfile).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise _Unresolved(f"config filter {name}: cannot read {pwfile!r}: {e}") from None
    try:
        keys = read_secret_keys(m.group(1), password)
    except KeystoreError as e:
        raise _Unresolved(f"config filter {name}: {e}") from None
    return {alias: raw.decode("utf-8", "replace") for alias, raw in keys.items()}


class Substitutor:
    """Resolves the `${...}` of one document. Raises ConfigError (see `resolve_document`)."""

    def __init__(self, where: str, sysprops: Mapping[str, str], file_vars: Mapping[str, Any]):
        self.where = where
        self.sysprops = sysprops
        self.file_vars = file_vars
        self.problems: list[str] = []

    def value(self, text: str, filters: Mapping[str, _Filter], at: str) -> Any:
        if "$" not in text:
            return text
        failed = False

        def one(m: re.Match[str]) -> str:
            nonlocal failed
            if m.group(0) == "$${":
                return "${"
            try:
                return self._lookup(m.group(1), filters)
            except _Unresolved as e:
                self.problems.append(f"{at}: {m.group(0)}: {e}")
                failed = True
                return m.group(0)

        out = _VAR.sub(one, text)
        if failed or out == text:
            return out
        return Resolved(out, text)

    def _lookup(self, var: str, filters: Mapping[str, _Filter]) -> str:
        ref = _FILTER_REF.match(var)
        if ref is not None:
            f = filters.get(ref.group(1))
            if f is None:
                raise _Unresolved(
                    f"no config filter named {ref.group(1)!r} (declare it with "
                    f"AGENT.configfilters = {ref.group(1)})"
                )
            return f.lookup(ref.group(3))
        prefix, colon, name = var.partition(":")
        if not colon:
            if var in self.file_vars:
                return str(self.file_vars[var])
            if var in os.environ:
                return os.environ[var]
            raise _Unresolved(f"{var} is neither set in the file nor an environment variable")
        if prefix == "env":
            if name not in os.environ:
                raise _Unresolved(f"environment variable {name} is not set")
            return os.environ[name]
        if prefix == "sys":
            if name not in self.sysprops:
                raise _Unresolved(f"system property {name} is not set (give -D{name}=VALUE)")
            return self.sysprops[name]
        raise _Unresolved(
            f"unknown lookup {prefix!r} (flumed resolves ${{env:NAME}}, ${{sys:NAME}}, "
            "${NAME} and config filters ${FILTER['KEY']})"
        )

    def walk(self, node: Any, filters: Mapping[str, _Filter], at: str) -> Any:
        if isinstance(node, str):
            return self.value(node, filters, at)
        if isinstance(node, list):
            return [self.walk(v, filters, at) for v in node]
        if isinstance(node, Mapping):
            return {k: self.walk(v, filters, f"{at}.{k}") for k, v in node.items()}
        return node


def _filters(sub: Substitutor, agent: str, section: Any, at: str) -> dict[str, _Filter]:
    """The agent's config filters (their own keys may use env/sys/bare `${...}`)."""
    out: dict[str, _Filter] = {}
    if section is None:
        return out
    if isinstance(section, str):
        section = {n: {} for n in section.replace(",", " ").split()}
    if not isinstance(section, Mapping):
        sub.problems.append(f"{at}: key 'configfilters' must name the filters")
        return out
    from flumed.config.keys import flatten

    for name, conf in section.items():
        fat = f"{at}: configfilter {name}"
        flat = flatten(conf) if isinstance(conf, Mapping) else {}
        flat = {k: sub.walk(v, {}, f"{fat}: key '{k}'") for k, v in flat.items()}
        t = str(flat.get("type", ""))
        kind = _FILTER_TYPES.get(t.lower())
        if kind is None:
            sub.problems.append(
                f"{fat}: key 'type': {t or 'missing'}: expected env, external or hadoop"
            )
            continue
        for k in flat:
            if k not in _FILTER_KEYS[kind]:
                sub.problems.append(f"{fat}: unknown key '{k}'")
        if kind == "external" and not flat.get("command"):
            sub.problems.append(f"{fat}: missing required key 'command'")
            continue
        if kind == "hadoop" and not flat.get("credential.provider.path"):
            sub.problems.append(f"{fat}: missing required key 'credential.provider.path'")
            continue
        out[name] = _Filter(name, kind, {k: str(v) for k, v in flat.items()})
    return out


def resolve_document(
    doc: Mapping[str, Any], where: str, sysprops: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A copy of `doc` with every `${...}` resolved and `configfilters` removed.

    Raises:
        ConfigError: every variable that could not be resolved, each naming the file,
            the agent, the key and the variable.
    """
    raw_vars = doc.get("vars") or {}
    sub = Substitutor(where, sysprops or {}, {})
    # File variables may use env/sys themselves.
    sub.file_vars = {
        k: sub.value(v, {}, f"{where}: {k}") if isinstance(v, str) else v
        for k, v in raw_vars.items()
    }
    agents: dict[str, Any] = {}
    for name, agent in (doc.get("agents") or {}).items():
        at = f"{where}: agent {name}"
        if not isinstance(agent, Mapping):
            agents[name] = agent
            continue
        filters = _filters(sub, name, agent.get("configfilters"), at)
        out: dict[str, Any] = {}
        for section, body in agent.items():
            if section == "configfilters":
                continue
            if isinstance(body, Mapping):
                out[section] = {
                    comp: _walk_component(sub, filters, f"{at}: {section[:-1]} {comp}", keys)
                    for comp, keys in body.items()
                }
            else:
                out[section] = sub.walk(body, filters, f"{at}: key '{section}'")
        agents[name] = out
    if sub.problems:
        raise ConfigError(sub.problems)
    result = {k: v for k, v in doc.items() if k not in ("agents", "vars")}
    result["agents"] = agents
    return result


def _walk_component(sub: Substitutor, filters: Mapping[str, _Filter], at: str, keys: Any) -> Any:
    if not isinstance(keys, Mapping):
        return sub.walk(keys, filters, at)
    from flumed.config.keys import flatten

    # Walk flat keys so an error names the full Flume key.
    flat = flatten(keys)
    resolved = {k: sub.walk(v, filters, f"{at}: key '{k}'") for k, v in flat.items()}
    if all(resolved[k] is flat[k] for k in flat):
        return keys
    return _renest(keys, resolved)


def _renest(keys: Mapping[str, Any], resolved: Mapping[str, Any], base: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in keys.items():
        full = f"{base}.{k}" if base else str(k)
        out[k] = _renest(v, resolved, full) if isinstance(v, Mapping) else resolved[full]
    return out
