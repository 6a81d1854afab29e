import { reactive, ref } from 'vue'
import { clearDraft, useDraft } from '@/auth/drafts'

/**
 * A form that creates something, kept in a draft (auth/drafts) as it is typed. Each blank form
 * carries a new idempotency key: a double click or a retry after a lost answer creates one
 * record, and starting again makes a new one.
 */
export function useDraftForm<T extends object>(key: string, blank: () => T) {
  const fresh = () => ({ ...blank(), idempotency_key: crypto.randomUUID() })
  const form = reactive(fresh())
  const restored = useDraft(key, form)
  const touched = ref(false)
  const busy = ref(false)
  const error = ref<unknown>(null)

  /**
   * Shows what needs fixing from now on; when `ok`, sends: busy meanwhile, the API's error kept
   * when it fails. `send` calls `discard` once the record exists.
   */
  async function submit(ok: boolean, send: () => Promise<void>) {
    touched.value = true
    if (!ok) return
    busy.value = true
    error.value = null
    try {
      await send()
    } catch (e) {
      error.value = e
    } finally {
      busy.value = false
    }
  }

  return {
    form,
    /** whether a draft was restored */
    restored,
    touched,
    busy,
    error,
    submit,
    /** the form was sent: its draft is done with */
    discard: () => clearDraft(key),
    /** start again: blank fields, a new key, no draft, nothing to fix */
    reset: () => {
      Object.assign(form, fresh())
      clearDraft(key)
      touched.value = false
      error.value = null
    },
  }
}
