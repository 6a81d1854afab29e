import { reactive, type Ref, ref } from 'vue'

/** What components/EditDialog.vue needs of the state below. */
export interface EditDialogState {
  open: Ref<boolean>
  busy: Ref<boolean>
  error: Ref<unknown>
  form: object
  save: () => Promise<void>
}

/**
 * A create-or-edit dialog's state for a table's rows (institutions, staff): one form, opened
 * blank or from a row; saving checks it, stays busy while the API answers, closes on success
 * and keeps the API's error otherwise.
 */
export function useEditDialog<Row, Form extends object>(options: {
  blank: () => Form
  /** the form's fields from a row being edited */
  fromRow: (row: Row) => Partial<Form>
  /** whether the form may be sent (checked after `touched` is set, so errors show) */
  valid: (form: Form, editing: Row | null) => boolean
  /** sends it: an update when `editing`, else a create */
  send: (form: Form, editing: Row | null) => Promise<void>
  /** after a save, the dialog closed */
  saved: () => Promise<unknown>
}) {
  const open = ref(false)
  const editing = ref(null) as Ref<Row | null>
  const busy = ref(false)
  const error = ref<unknown>(null)
  const touched = ref(false)
  const form = reactive(options.blank()) as Form

  function show(row: Row | null) {
    editing.value = row
    Object.assign(form, row ? options.fromRow(row) : options.blank())
    error.value = null
    touched.value = false
    open.value = true
  }

  async function save() {
    touched.value = true
    if (!options.valid(form, editing.value)) return
    busy.value = true
    error.value = null
    try {
      await options.send(form, editing.value)
      open.value = false
      await options.saved()
    } catch (e) {
      error.value = e
    } finally {
      busy.value = false
    }
  }

  return {
    open,
    editing,
    busy,
    error,
    touched,
    form,
    openCreate: () => show(null),
    openEdit: (row: Row) => show(row),
    save,
  }
}
