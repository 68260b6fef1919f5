// Type-checked by CI with `tsc --strict` against the TypeScript types openapi-typescript
// generates from the example's OpenAPI documents (3.1 and the 3.0.3 rendering; see
// .ci/run). It compiles only if the messages are typed end to end: per-entity records,
// results narrowed by `status`, mutations narrowed by `op`, records by `entity_type`.
// Each `@ts-expect-error` line proves the document forbids something: if the generated
// type let it through, the directive itself would fail the compile.
import type { components as V31 } from "./generated/openapi";
import type { components as V30 } from "./generated/openapi-3.0";

type S = V31["schemas"];

export function taskTitle(r: S["AnyServerRecord"]): string | undefined {
  if (r.entity_type === "task" && !r.deleted && "title" in r.record) {
    const title: string = r.record.title;
    const likes: number = r.record.likes;
    const tags: string[] = r.record.tags;
    return `${title} ${likes} ${tags.join(",")}`;
  }
  return undefined;
}

export function describe(result: S["MutationResult"]): string {
  switch (result.status) {
    case "applied":
      return `${result.server.entity_type} ${result.server.entity_id} v${result.server.version}`;
    case "conflict":
      return `conflict on ${result.fields.join(", ")} against v${result.server.version}`;
    case "rejected":
      return `${result.problem.status} ${result.problem.title}`;
  }
}

export function member(m: S["AnyMutation"]): string {
  switch (m.op) {
    case "create":
      return Object.keys(m.record).join(",");
    case "update":
      return Object.keys(m.patch).join(",");
    case "delete":
      return m.entity_id;
  }
}

export const create: S["TaskCreate"] = {
  idempotency_key: "k1",
  entity_type: "task",
  entity_id: "01900000-0000-7000-8000-000000000001",
  op: "create",
  record: {
    id: "01900000-0000-7000-8000-000000000001",
    project_id: "01900000-0000-7000-8000-000000000002",
    title: "Buy milk",
    status: "open",
    tags: ["home"],
    likes: 0,
    price_cents: 199,
    due: null,
    meta: null,
    type: null,
  },
};

export const update: S["TaskUpdate"] = {
  idempotency_key: "k2",
  entity_type: "task",
  entity_id: create.entity_id,
  op: "update",
  base_version: 1,
  patch: { likes: { add: 2 }, tags: { add: ["urgent"] } },
};

export const push: S["PushRequest"] = { mutations: [create, update] };

// @ts-expect-error a create needs its record
export const createWithoutRecord: S["TaskCreate"] = {
  idempotency_key: "k3",
  entity_type: "task",
  entity_id: create.entity_id,
  op: "create",
};

export const wrongOp: S["TaskUpdate"] = {
  idempotency_key: "k4",
  entity_type: "task",
  entity_id: create.entity_id,
  // @ts-expect-error an update's op is "update"
  op: "create",
  patch: {},
};

export const sumAsSet: S["TaskPatch"] = {
  // @ts-expect-error a `sum` field takes `add`, not `set`
  likes: { set: 3 },
};

export const unknownField: S["TaskRecord"] = {
  ...create.record,
  // @ts-expect-error records have no fields but the model's
  priority: 9,
};

export function wrongEntity(r: S["ProjectServerRecord"]): string {
  // @ts-expect-error a project record has no title
  return r.record.title;
}

// The 3.0.3 rendering types the same messages.
type T = V30["schemas"];
export function describe30(result: T["MutationResult"]): string {
  switch (result.status) {
    case "applied":
      return result.server.entity_id;
    case "conflict":
      return result.fields.join(",");
    case "rejected":
      return result.problem.title;
  }
}
export const create30: T["TaskCreate"] = create;
